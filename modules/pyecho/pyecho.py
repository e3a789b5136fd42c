#!/usr/bin/env python3
"""pyecho: a polis module in Python, standard library only.

It speaks line-delimited JSON-RPC 2.0 on stdin/stdout (DESIGN.md section 6),
so it needs no SDK:

- the router first sends the request `initialize` with the manifest's
  [config] table as params; the module answers with its name and version;
- then one request per call, answered by a result or an error;
- a stream sends each item as the notification
  {"jsonrpc":"2.0","method":"$/item","params":{"id":N,"value":...}}
  and then the final result (null);
- the notification `shutdown`, or the end of stdin, means exit.

stdout carries JSON lines only; everything else goes to stderr, which the
router keeps in its log. Calls are handled one at a time, in order.
"""

import json
import os
import sys
import time

NAME = "pyecho"
VERSION = "0.1.0"

# JSON-RPC's own error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class CallError(Exception):
    """An error answer: a code and a message for people."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def log(message):
    print(f"{NAME}: {message}", file=sys.stderr, flush=True)


def send(message):
    """Writes one JSON line and flushes it, so the router sees it now."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def param(params, key, kind, default=None):
    """The named parameter `key` of type `kind`, or `default` when absent."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CallError(INVALID_PARAMS, "expected named parameters (a JSON object)")
    value = params.get(key)
    if value is None:
        if default is None:
            raise CallError(INVALID_PARAMS, f'missing parameter "{key}"')
        return default
    # bool is an int in Python; a JSON true is not a number.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CallError(INVALID_PARAMS, f'parameter "{key}" must be {kind.__name__}')
    return value


def initialize(config, _id):
    log(f"initialized with config {json.dumps(config)}")
    return {"name": NAME, "version": VERSION}


def ping(_params, _id):
    return "pong"


def echo(params, _id):
    return params


def stream(params, call_id):
    """The numbers 0..count, one every interval_ms, the first at once."""
    count = param(params, "count", int, 3)
    interval = param(params, "interval_ms", int, 0) / 1000.0
    for i in range(count):
        if i > 0:
            time.sleep(interval)
        send({"jsonrpc": "2.0", "method": "$/item", "params": {"id": call_id, "value": i}})
    return None


def fail(params, _id):
    code = param(params, "code", int)
    message = param(params, "message", str, "failed on request")
    raise CallError(code, message)


METHODS = {
    "initialize": initialize,
    "ping": ping,
    "echo": echo,
    "stream": stream,
    "fail": fail,
}


def handle(message):
    """Answers one request; returns False when the module should exit."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or "method" not in message:
        send({"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": "not a JSON-RPC 2.0 request"}})
        return True
    method = message["method"]
    params = message.get("params")
    if "id" not in message:
        # A notification: nothing is answered.
        if method == "shutdown":
            log("shutting down")
            return False
        if method != "$/cancel":
            log(f"ignoring the notification {method!r}")
        return True
    call_id = message["id"]
    try:
        handler = METHODS.get(method)
        if handler is None:
            raise CallError(METHOD_NOT_FOUND, f'module {NAME} has no method "{method}"')
        send({"jsonrpc": "2.0", "id": call_id, "result": handler(params, call_id)})
    except CallError as err:
        send({"jsonrpc": "2.0", "id": call_id, "error": {"code": err.code, "message": err.message}})
    return True


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as err:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": f"not JSON: {err}"}})
            continue
        if not handle(message):
            break
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        # The router went away: nobody is left to answer. Point stdout at
        # /dev/null so that the final flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
