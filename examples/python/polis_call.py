#!/usr/bin/env python3
"""polis_call.py: call a polis service from Python, over the router's gRPC.

A script never needs a fixed port or a hard-coded socket path: it finds the
router BY NAME through the mesh directory (DESIGN.md section 4), exactly as the
`polis` command does, and then speaks plain gRPC to it (section 5).

    polis_call.py [--mesh-dir DIR] SERVICE METHOD [JSON]     one call, one reply
    polis_call.py [--mesh-dir DIR] --stream SERVICE METHOD [JSON]
                                                             one JSON value per line
    polis_call.py [--mesh-dir DIR] --health [SERVICE]        grpc.health.v1 check
    polis_call.py [--mesh-dir DIR] --resolve NAME            the live record for NAME
    polis_call.py [--mesh-dir DIR] --list                    gRPC services, by reflection

Examples:

    polis_call.py echo ping                                  # prints "pong"
    polis_call.py echo echo '{"any": ["json", 1]}'
    polis_call.py --stream echo stream '{"count": 3, "interval_ms": 200}'

Exit codes are polis's: 0 success, 1 the service or router returned an error,
2 usage, 3 not found, 4 unavailable (no router, module crashed, deadline).
Errors are one line on stderr: `error: CODE: message`.

This script does not start a router; run `polis router` (or any `polis call`,
which launches one) first.

Needs: Python 3.8+, grpcio and grpcio-tools (and grpcio-health-checking for
--health, grpcio-reflection for --list), e.g.

    python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1

The Python stubs are generated from the repository's .proto files each time the
script runs (it takes a fraction of a second), so nothing generated is kept.
"""

import argparse
import errno
import fcntl
import importlib
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

try:
    import grpc  # grpcio
except ImportError:  # only --resolve works without it; main() says what to install
    grpc = None

# --------------------------------------------------------------------------
# Exit codes: the same contract as the `polis` command (README "Exit codes").
# --------------------------------------------------------------------------
EXIT_OK = 0
EXIT_REMOTE = 1  # the service or the router returned an error
EXIT_USAGE = 2  # the command line was wrong
EXIT_NOT_FOUND = 3  # no such service, method or name
EXIT_UNAVAILABLE = 4  # no router, a crashed module, or a deadline passed

# The record format this script understands (DESIGN.md section 4).
RECORD_FORMAT = 1

JSON_CONTENT_TYPE = "application/json"

# This file lives at <repo>/examples/python/polis_call.py; the .proto files
# are at <repo>/proto/polis/v1/*.proto.
DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"
PROTO_FILES = [
    "polis/v1/payload.proto",
    "polis/v1/session.proto",
    "polis/v1/frame.proto",
    "polis/v1/router.proto",
]


class Failure(Exception):
    """An error for a person to read, with the exit code it ends the script with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# The gRPC-style code of an error line whose message names none, by exit
# code, as `polis` picks it (src/exit.rs).
CODE_OF_EXIT = {
    EXIT_USAGE: "INVALID_ARGUMENT",
    EXIT_NOT_FOUND: "NOT_FOUND",
    EXIT_UNAVAILABLE: "UNAVAILABLE",
}


def error_line(exit_code, message):
    """`error: CODE: message` on one line: a message that starts with its
    code (a status from the router) keeps it; any other gets its exit
    code's, so that every error line reads the same way."""
    message = message.replace("\n", " ")
    head, sep, _ = message.partition(": ")
    if sep and len(head) > 2 and all(c.isupper() or c == "_" for c in head):
        return "error: " + message
    return "error: {}: {}".format(CODE_OF_EXIT.get(exit_code, "INTERNAL"), message)


def warn(message):
    print("warning: " + message, file=sys.stderr)


# --------------------------------------------------------------------------
# 1. Finding the mesh directory.
# --------------------------------------------------------------------------
def find_mesh_dir(flag):
    """The mesh directory, first that applies (DESIGN.md section 4):

    --mesh-dir DIR; else $POLIS_MESH_DIR; else $XDG_RUNTIME_DIR/polis/<mesh>;
    else <temp dir>/polis-<uid>/<mesh>, where <mesh> is $POLIS_MESH or "default".
    """
    if flag:
        return Path(flag)
    if os.environ.get("POLIS_MESH_DIR"):
        return Path(os.environ["POLIS_MESH_DIR"])
    mesh = os.environ.get("POLIS_MESH") or "default"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    # Like polis, only an absolute $XDG_RUNTIME_DIR counts.
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "polis" / mesh
    return Path(tempfile.gettempdir()) / "polis-{}".format(os.getuid()) / mesh


def check_mesh_dir(mesh_dir):
    """Refuses a mesh directory that someone else could have written to.

    Whoever can write there could publish a fake router.json and receive our
    calls, so the directory must be ours and not group/world writable. (polis
    also creates the directory; a script only reads, so a missing one is fine:
    it simply has no router.)
    """
    try:
        st = os.stat(mesh_dir)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid():
        raise Failure(
            EXIT_REMOTE,
            "FAILED_PRECONDITION: the mesh directory {} belongs to uid {}, not to you".format(
                mesh_dir, st.st_uid
            ),
        )
    if st.st_mode & 0o022:
        raise Failure(
            EXIT_REMOTE,
            "FAILED_PRECONDITION: the mesh directory {} is writable by others (mode {:o}); refusing to use it".format(
                mesh_dir, st.st_mode & 0o777
            ),
        )


# --------------------------------------------------------------------------
# 2. Reading records and checking liveness.
# --------------------------------------------------------------------------
def read_record(path):
    """Parses a node record (nodes/<id>.json or router.json).

    Raises ValueError with a reason in words when the file cannot be used, so
    the caller can skip it with a warning instead of crashing.
    """
    data = Path(path).read_bytes()
    if not data.strip():
        raise ValueError("empty file")
    try:
        record = json.loads(data)
    except ValueError as e:
        raise ValueError("not JSON ({})".format(e)) from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("format") != RECORD_FORMAT:
        raise ValueError(
            "unknown record format {!r} (this script reads format {})".format(record.get("format"), RECORD_FORMAT)
        )
    try:
        # The id names the node's files, so it must be a real UUID (this also
        # keeps a hostile id like "../../x" out of the paths we build).
        record["id"] = str(uuid.UUID(record["id"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError("no valid id") from None
    return record


def is_live(mesh_dir, node_id):
    """Whether the node `node_id` is alive: whether another process holds the
    flock on <mesh>/nodes/<id>.lock.

    A node holds that lock (exclusively) for its whole life, and the kernel
    releases it the moment the process dies, so there are no heartbeats, no
    pids to reuse and no timeouts. We probe it with a *shared*, non-blocking
    lock: if we get it, nobody holds the exclusive lock, so the node is dead
    (we let go at once); if it would block, the node is alive.
    """
    lock_path = Path(mesh_dir) / "nodes" / "{}.lock".format(node_id)
    try:
        fd = os.open(str(lock_path), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # held by the node: alive
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False  # nobody holds it: the node is gone
    finally:
        os.close(fd)


def live_router(mesh_dir):
    """The record of the router in office, or None when no router is running."""
    path = Path(mesh_dir) / "router.json"
    try:
        record = read_record(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        warn("skipping {}: {}".format(path, e))
        return None
    # router.json stays behind when a router is killed; only the lock says
    # whether it is still in office.
    return record if is_live(mesh_dir, record["id"]) else None


def live_nodes(mesh_dir):
    """Every live record under <mesh>/nodes/, oldest first; unreadable ones are
    skipped with a warning."""
    nodes_dir = Path(mesh_dir) / "nodes"
    try:
        paths = sorted(nodes_dir.glob("*.json"))
    except OSError:
        return []
    nodes = []
    for path in paths:
        # Records are named <uuid>.json; dot files are records being written.
        try:
            file_id = str(uuid.UUID(path.stem))
        except ValueError:
            continue
        try:
            record = read_record(path)
        except FileNotFoundError:
            continue  # removed since we listed the directory: its node just left
        except (OSError, ValueError) as e:
            warn("skipping {}: {}".format(path, e))
            continue
        if record["id"] != file_id:
            warn("skipping {}: its id {} does not match its file name".format(path, record["id"]))
            continue
        if is_live(mesh_dir, file_id):
            nodes.append(record)
    nodes.sort(key=lambda r: (str(r.get("started_at", "")), r["id"]))
    return nodes


def resolve(mesh_dir, name):
    """The live record serving `name` (the router's for "router"), or None.

    Mirrors `polis resolve NAME`: the newest live node listing the name in its
    "services" wins if there are several.
    """
    if name == "router":
        return live_router(mesh_dir)
    for record in reversed(live_nodes(mesh_dir)):
        services = record.get("services") or []
        if isinstance(services, list) and name in services:
            return record
    return None


def router_socket(mesh_dir):
    """The path of the live router's Unix socket, from its record."""
    record = live_router(mesh_dir)
    if record is None:
        raise Failure(
            EXIT_UNAVAILABLE,
            "no router is running in the mesh at {}; start one with polis router".format(mesh_dir),
        )
    endpoint = record.get("endpoint") or ""
    if not endpoint.startswith("unix:"):
        raise Failure(EXIT_UNAVAILABLE, "the router's endpoint {!r} is not a Unix socket".format(endpoint))
    return endpoint[len("unix:") :]


# --------------------------------------------------------------------------
# 3. Python stubs, generated from the .proto files at run time.
# --------------------------------------------------------------------------
def load_stubs(proto_dir):
    """Runs grpc_tools.protoc on the polis protos into a temp dir, imports the
    result and returns the modules (router_pb2, router_pb2_grpc).

    This is what `python -m grpc_tools.protoc -I proto --python_out=OUT
    --grpc_python_out=OUT polis/v1/*.proto` does on the command line; a real
    project may well run that once and keep the output instead.
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        raise Failure(
            EXIT_REMOTE,
            "FAILED_PRECONDITION: grpcio-tools is not installed; run: python3 -m pip install grpcio-tools",
        ) from None
    proto_dir = Path(proto_dir)
    missing = [f for f in PROTO_FILES if not (proto_dir / f).is_file()]
    if missing:
        raise Failure(EXIT_USAGE, "no {} under {} (use --proto-dir)".format(", ".join(missing), proto_dir))

    # grpc_tools ships the well-known protos (google/protobuf/*.proto); put
    # them on the include path in case a .proto imports one.
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"

    with tempfile.TemporaryDirectory(prefix="polis-stubs-") as out:
        args = [
            "grpc_tools.protoc",  # argv[0], ignored
            "-I{}".format(proto_dir),
            "-I{}".format(well_known),
            "--python_out={}".format(out),
            "--grpc_python_out={}".format(out),
        ] + PROTO_FILES
        if protoc.main(args) != 0:
            raise Failure(EXIT_REMOTE, "protoc could not compile the protos in {}".format(proto_dir))
        # The output mirrors the proto packages: OUT/polis/v1/router_pb2.py,
        # whose imports read `from polis.v1 import payload_pb2`. Empty
        # __init__.py files make OUT/polis a regular package, so that it wins
        # over anything else called `polis` on sys.path.
        for package in ("polis", "polis/v1"):
            Path(out, package, "__init__.py").touch()
        sys.path.insert(0, out)
        try:
            router_pb2 = importlib.import_module("polis.v1.router_pb2")
            router_pb2_grpc = importlib.import_module("polis.v1.router_pb2_grpc")
        finally:
            sys.path.remove(out)
    # The modules are in memory now; the temp dir can go.
    return router_pb2, router_pb2_grpc


# --------------------------------------------------------------------------
# 4. gRPC.
# --------------------------------------------------------------------------
def open_channel(socket_path):
    """An insecure (local, same-user) gRPC channel to the router's socket,
    with grpcio's default options: the router accepts the socket path that
    grpcio sends as the HTTP/2 :authority."""
    return grpc.insecure_channel("unix:" + socket_path)


def rpc_failure(error):
    """A Failure for a gRPC error, with polis's exit code and error line."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.NOT_FOUND:
        exit_code = EXIT_NOT_FOUND
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        exit_code = EXIT_UNAVAILABLE
    else:
        exit_code = EXIT_REMOTE
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    return Failure(exit_code, "{}: {}".format(code.name, details))


def print_payload(payload):
    """Prints a reply's payload as one line of JSON, flushed at once (so a
    reader of a stream sees each item as it arrives)."""
    content_type = payload.content_type or JSON_CONTENT_TYPE
    if content_type != JSON_CONTENT_TYPE:
        raise Failure(EXIT_REMOTE, "the reply is {}, not JSON".format(content_type))
    # An empty payload is JSON null, as with `polis call`.
    value = json.loads(payload.data) if payload.data else None
    print(json.dumps(value), flush=True)


def call(mesh_dir, proto_dir, service, method, params, stream, timeout_ms):
    """Router.Call (or Router.CallStream) with JSON params; prints the reply."""
    socket_path = router_socket(mesh_dir)
    router_pb2, router_pb2_grpc = load_stubs(proto_dir)

    # The payload is opaque bytes to the router; JSON is polis's default.
    request = router_pb2.CallRequest(
        service=service,
        method=method,
        # Nested messages can be given as dicts of their fields.
        payload={"content_type": JSON_CONTENT_TYPE, "data": params},
        timeout_ms=timeout_ms or 0,  # 0: the router's default deadline
        caller="polis_call.py/{}".format(os.getpid()),
    )
    # The router enforces timeout_ms; our own deadline, a second later, only
    # guards against a router that hangs.
    deadline = timeout_ms / 1000.0 + 1.0 if timeout_ms else None

    with open_channel(socket_path) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        try:
            if stream:
                # A server stream: an iterator yielding each CallReply the
                # moment the module sends it.
                for reply in stub.CallStream(request, timeout=deadline):
                    print_payload(reply.payload)
            else:
                reply = stub.Call(request, timeout=deadline)
                print_payload(reply.payload)
        except grpc.RpcError as e:
            raise rpc_failure(e) from None
    return EXIT_OK


def health(mesh_dir, service, timeout_s):
    """The standard grpc.health.v1.Health/Check; "" asks about the server as
    a whole. Prints the status name; succeeds only for SERVING."""
    try:
        # The health protos and stubs ship with grpcio-health-checking.
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        raise Failure(
            EXIT_REMOTE,
            "FAILED_PRECONDITION: grpcio-health-checking is not installed; run: python3 -m pip install grpcio-health-checking",
        ) from None

    socket_path = router_socket(mesh_dir)
    with open_channel(socket_path) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as e:
            raise rpc_failure(e) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status, flush=True)
    return EXIT_OK if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_REMOTE


def list_services(mesh_dir):
    """--list: the router's gRPC services, one per line, through server
    reflection as grpcio-reflection's client speaks it (v1alpha)."""
    try:
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )
    except ImportError:
        raise Failure(
            EXIT_REMOTE,
            "FAILED_PRECONDITION: grpcio-reflection is not installed; run: python3 -m pip install grpcio-reflection",
        ) from None
    socket_path = router_socket(mesh_dir)
    with open_channel(socket_path) as channel:
        try:
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
        except grpc.RpcError as e:
            raise rpc_failure(e) from None
    for service in sorted(services):
        print(service, flush=True)
    return EXIT_OK


def resolve_command(mesh_dir, name):
    """--resolve NAME: the live record as one line of JSON, like `polis resolve`."""
    record = resolve(mesh_dir, name)
    if record is None:
        raise Failure(
            EXIT_NOT_FOUND,
            "no live node serves {} in the mesh at {}".format(json.dumps(name), mesh_dir),
        )
    print(json.dumps(record, separators=(",", ":")), flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------
# 5. The command line.
# --------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(
        usage="%(prog)s [options] [--stream] SERVICE METHOD [JSON]\n"
        "       %(prog)s [options] --health [SERVICE]\n"
        "       %(prog)s [options] --resolve NAME",
        description="Call a polis service through the router of a mesh, over gRPC.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 unavailable.",
    )
    parser.add_argument("--mesh-dir", metavar="DIR", help="the mesh directory (default: as polis finds it)")
    parser.add_argument(
        "--proto-dir",
        metavar="DIR",
        default=str(DEFAULT_PROTO_DIR),
        help="the root of the polis .proto files (default: %(default)s)",
    )
    parser.add_argument("--timeout", metavar="MS", type=int, help="the call's deadline in milliseconds")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--stream", action="store_true", help="Router/CallStream: print each item on its own line"
    )
    mode.add_argument("--health", action="store_true", help="grpc.health.v1.Health/Check [SERVICE] and exit")
    mode.add_argument("--resolve", metavar="NAME", help="print the live record serving NAME and exit")
    mode.add_argument("--list", action="store_true", help="list the router's gRPC services (reflection) and exit")
    parser.add_argument(
        "words", nargs="*", metavar="ARG", help="SERVICE METHOD [JSON]: what to call, and its params"
    )
    args = parser.parse_args(argv)

    if args.resolve is not None or args.list:
        if args.words:
            parser.error("--resolve and --list take no other arguments")
    elif args.health:
        if len(args.words) > 1:
            parser.error("--health takes at most one SERVICE")
    elif not 2 <= len(args.words) <= 3:
        parser.error("expected SERVICE METHOD [JSON]")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be a positive number of milliseconds")
    return args, parser


def main(argv=None):
    args, parser = parse_args(sys.argv[1:] if argv is None else argv)
    mesh_dir = find_mesh_dir(args.mesh_dir)
    try:
        check_mesh_dir(mesh_dir)
        if args.resolve is not None:
            return resolve_command(mesh_dir, args.resolve)
        if grpc is None:
            raise Failure(
                EXIT_REMOTE,
                "FAILED_PRECONDITION: grpcio is not installed; run: python3 -m pip install grpcio grpcio-tools",
            )
        if args.list:
            return list_services(mesh_dir)
        if args.health:
            service = args.words[0] if args.words else ""
            timeout_s = args.timeout / 1000.0 if args.timeout else 5.0
            return health(mesh_dir, service, timeout_s)

        service, method = args.words[0], args.words[1]
        params = b""  # no params: an empty payload, as `polis call` sends
        if len(args.words) == 3:
            try:
                json.loads(args.words[2])
            except ValueError as e:
                parser.error("the params are not JSON ({})".format(e))
            params = args.words[2].encode("utf-8")
        return call(mesh_dir, args.proto_dir, service, method, params, args.stream, args.timeout)
    except Failure as f:
        print(error_line(f.code, f.message), file=sys.stderr)
        return f.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
