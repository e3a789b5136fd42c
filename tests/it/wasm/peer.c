/*
 * wasm-peer: a WASI module for the tests (tests/it/wasm.rs), built there
 * with zig like the shipped wasm-echo. It speaks line-delimited JSON-RPC
 * and uses the sandbox's ways back into the mesh:
 *
 * - relay {service, method, params}: makes that call with `$/call` (its
 *   parent the request being served) and answers with its answer. While it
 *   waits it serves the requests that arrive meanwhile, so a module it calls
 *   may call it back.
 * - publish {topic, value}: a `$/publish` notification; answers true.
 * - version: VERSION (a -D of the build), to tell two builds apart.
 * - hold: waits until the file data/release exists, then answers VERSION:
 *   a call that stays in flight for as long as the test wants.
 * - socket: tries accept() on every descriptor it has (WASI preview 1 has
 *   no socket() at all); answers the errno of each, or an error if any
 *   succeeded.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "1.0.0"
#endif

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

static const char *skip_string(const char *p) {
    for (p++; *p; p++) {
        if (*p == '\\') {
            if (!*++p) return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

static const char *skip_value(const char *p) {
    p = skip_ws(p);
    if (*p == '"') return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                p = skip_string(p);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
            p++;
        }
        return NULL;
    }
    const char *start = p;
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r') p++;
    return p > start ? p : NULL;
}

/* Member `key` of the object at obj: [*start, *end) is its value. */
static int member(const char *obj, const char *key, const char **start, const char **end) {
    const char *p = skip_ws(obj);
    if (*p != '{') return 0;
    p = skip_ws(p + 1);
    size_t keylen = strlen(key);
    while (*p == '"') {
        const char *kend = skip_string(p);
        if (!kend) return 0;
        int match = (size_t)(kend - p - 2) == keylen && strncmp(p + 1, key, keylen) == 0;
        p = skip_ws(kend);
        if (*p != ':') return 0;
        const char *v = skip_ws(p + 1), *vend = skip_value(v);
        if (!vend) return 0;
        if (match) {
            *start = v;
            *end = vend;
            return 1;
        }
        p = skip_ws(vend);
        if (*p != ',') return 0;
        p = skip_ws(p + 1);
    }
    return 0;
}

static void reply_raw(const char *id, size_t idlen, const char *json, size_t len) {
    printf("{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":%.*s}\n", (int)idlen, id, (int)len, json);
    fflush(stdout);
}

static void reply(const char *id, size_t idlen, const char *json) { reply_raw(id, idlen, json, strlen(json)); }

static void fail(const char *id, size_t idlen, int code, const char *message) {
    printf("{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":%d,\"message\":\"%s\"}}\n", (int)idlen, id, code,
           message);
    fflush(stdout);
}

static long next_call = 1;

static void serve(const char *line);

/* Makes a call with $/call while serving request `parent`; sends its answer
 * as the reply to `id`. Requests that arrive first are served. */
static void relay(const char *id, size_t idlen, const char *params) {
    const char *service, *send, *method, *mend, *p = "null", *pend = p + 4;
    if (!params || !member(params, "service", &service, &send) || !member(params, "method", &method, &mend)) {
        return fail(id, idlen, -32602, "relay takes service and method");
    }
    member(params, "params", &p, &pend);
    long mine = next_call++;
    printf("{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"$/call\",\"params\":{\"service\":%.*s,\"method\":%.*s,"
           "\"params\":%.*s,\"parent\":%.*s}}\n",
           mine, (int)(send - service), service, (int)(mend - method), method, (int)(pend - p), p, (int)idlen, id);
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        const char *v, *vend, *rid, *ridend;
        if (member(line, "method", &v, &vend)) {
            serve(line); /* a request meanwhile: maybe the callee calling back */
            continue;
        }
        if (!member(line, "id", &rid, &ridend) || strtol(rid, NULL, 10) != mine) continue;
        if (member(line, "result", &v, &vend)) {
            reply_raw(id, idlen, v, (size_t)(vend - v));
        } else {
            /* Pass the callee's error on as it came. */
            member(line, "error", &v, &vend);
            printf("{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":%.*s}\n", (int)idlen, id, (int)(vend - v), v);
            fflush(stdout);
        }
        free(line);
        return;
    }
    free(line);
    exit(0); /* stdin closed while waiting: the router is done with us */
}

static void publish(const char *id, size_t idlen, const char *params) {
    const char *topic, *tend, *value = "null", *vend = value + 4;
    if (!params || !member(params, "topic", &topic, &tend)) return fail(id, idlen, -32602, "publish takes topic");
    member(params, "value", &value, &vend);
    printf("{\"jsonrpc\":\"2.0\",\"method\":\"$/publish\",\"params\":{\"topic\":%.*s,\"value\":%.*s}}\n",
           (int)(tend - topic), topic, (int)(vend - value), value);
    reply(id, idlen, "true");
}

static void hold(const char *id, size_t idlen) {
    while (access("data/release", F_OK) != 0) usleep(5000);
    reply(id, idlen, "\"" VERSION "\"");
}

static void sockets(const char *id, size_t idlen) {
    char out[512] = "[";
    for (int fd = 0; fd < 8; fd++) {
        errno = 0;
        int got = accept(fd, NULL, NULL);
        if (got >= 0) return fail(id, idlen, 9, "accept() gave a socket");
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s%d", fd ? "," : "", errno);
    }
    strcat(out, "]");
    reply(id, idlen, out);
}

static int quit;

static void serve(const char *line) {
    const char *m, *mend, *id = NULL, *idend = NULL, *params = NULL, *pend = NULL;
    if (!member(line, "method", &m, &mend) || *m != '"') return;
    int has_id = member(line, "id", &id, &idend);
    member(line, "params", &params, &pend);
    size_t mlen = (size_t)(mend - m - 2), idlen = has_id ? (size_t)(idend - id) : 0;
    m++;
#define IS(name) (mlen == strlen(name) && strncmp(m, name, mlen) == 0)
    if (!has_id) {
        if (IS("shutdown")) quit = 1;
    } else if (IS("initialize")) {
        reply(id, idlen, "{\"name\":\"wasm-peer\",\"version\":\"" VERSION "\"}");
    } else if (IS("version")) {
        reply(id, idlen, "\"" VERSION "\"");
    } else if (IS("hold")) {
        hold(id, idlen);
    } else if (IS("relay")) {
        relay(id, idlen, params);
    } else if (IS("publish")) {
        publish(id, idlen, params);
    } else if (IS("socket")) {
        sockets(id, idlen);
    } else {
        fail(id, idlen, -32601, "no such method");
    }
#undef IS
}

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    while (!quit && getline(&line, &cap, stdin) > 0) serve(line);
    free(line);
    return 0;
}
