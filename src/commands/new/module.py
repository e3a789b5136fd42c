#!/usr/bin/env python3
"""NAME: a polis module in Python, standard library only.

It speaks JSON-RPC 2.0, one JSON object per line, on stdin/stdout:
the router sends `initialize` (params: the manifest's [config] table) first,
then one request per call; the notification `shutdown`, or the end of
stdin, means exit. stdout carries JSON lines only: log to stderr, which
the router keeps in <mesh>/logs/NAME.log (`polis log NAME`).
"""

import json
import sys

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

config = {}


def ping(_params):
    return "pong"


def hello(params):
    """`hello {name?}`: a greeting, from [config] greeting."""
    who = (params or {}).get("name", "world")
    if not isinstance(who, str):
        raise CallError(INVALID_PARAMS, 'parameter "name" must be a string')
    return f"{config.get('greeting', 'hello')}, {who}"


METHODS = {"ping": ping, "hello": hello}


class CallError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main():
    global config
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        method, id_ = msg.get("method"), msg.get("id")
        if method == "shutdown":
            return
        if id_ is None:
            continue  # another notification, such as $/cancel
        try:
            if method == "initialize":
                config = msg.get("params") or {}
                result = {"name": "NAME", "version": "0.1.0"}
            elif method in METHODS:
                result = METHODS[method](msg.get("params"))
            else:
                raise CallError(METHOD_NOT_FOUND, f"no method {method!r}")
            send({"jsonrpc": "2.0", "id": id_, "result": result})
        except CallError as e:
            send({"jsonrpc": "2.0", "id": id_, "error": {"code": e.code, "message": e.message}})


if __name__ == "__main__":
    main()
