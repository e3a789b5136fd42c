/*
 * wasm-echo: a polis module in C, standard library only, built for WASI
 * (wasm32-wasi) and run sandboxed by polis-wasm. It speaks line-delimited
 * JSON-RPC 2.0 on stdin/stdout (DESIGN.md section 6), like pyecho:
 *
 * - the router first sends the request `initialize` with the manifest's
 *   [config] table as params; the module answers with its name and version;
 * - then one request per call, answered by a result or an error;
 * - the notification `shutdown`, or the end of stdin, means exit.
 *
 * stdout carries JSON lines only; stderr goes to the module's log. The same
 * file builds natively (`cc wasm-echo.c`), which is how polis-bench compares
 * the two.
 *
 * Besides ping and echo it has methods that touch the world, to show (and
 * test) what the sandbox refuses: read and write a file, read an
 * environment variable, allocate memory, and spin forever.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON-RPC's own error codes, and gRPC codes (1-16) polis passes through. */
#define INVALID_PARAMS -32602
#define METHOD_NOT_FOUND -32601
#define FAILED_PRECONDITION 9

/* ---- a small JSON scanner: enough to take a request apart ---- */

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

/* p is at '"'; returns the character after the closing quote, or NULL. */
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

/* Returns the end of the JSON value starting at p, or NULL. */
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
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    /* a number, true, false or null */
    const char *start = p;
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r') p++;
    return p > start ? p : NULL;
}

/* Finds member `key` of the object at obj; sets [*start, *end) to its value. */
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
        const char *v = skip_ws(p + 1);
        const char *vend = skip_value(v);
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

/* The string member `key` of obj, unescaped (ASCII escapes only), or NULL. */
static char *string_member(const char *obj, const char *key) {
    const char *v, *end;
    if (!obj || !member(obj, key, &v, &end) || *v != '"') return NULL;
    char *out = malloc((size_t)(end - v)), *o = out;
    if (!out) return NULL;
    for (const char *p = v + 1; p < end - 1; p++) {
        if (*p != '\\') {
            *o++ = *p;
            continue;
        }
        switch (*++p) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        default: *o++ = *p; break;
        }
    }
    *o = '\0';
    return out;
}

/* ---- answers ---- */

/* Writes s as a JSON string. */
static void put_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void begin_result(const char *id, size_t idlen) {
    printf("{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":", (int)idlen, id);
}

/* Ends a message: the newline, then a flush, so the router sees it now. */
static void end(void) {
    fputs("}\n", stdout);
    fflush(stdout);
}

static void error(const char *id, size_t idlen, int code, const char *what, int err) {
    printf("{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":%d,\"message\":", (int)idlen, id, code);
    if (err) {
        char message[512];
        snprintf(message, sizeof message, "%s: %s (errno %d)", what, strerror(err), err);
        put_string(message);
    } else {
        put_string(what);
    }
    putchar('}');
    end();
}

/* ---- the methods ---- */

static void read_file(const char *id, size_t idlen, const char *params) {
    char *path = string_member(params, "path");
    if (!path) return error(id, idlen, INVALID_PARAMS, "missing parameter \"path\"", 0);
    FILE *f = fopen(path, "r");
    if (!f) {
        int err = errno;
        char what[300];
        snprintf(what, sizeof what, "open %s", path);
        free(path);
        return error(id, idlen, FAILED_PRECONDITION, what, err);
    }
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    free(path);
    begin_result(id, idlen);
    put_string(text);
    end();
}

static void write_file(const char *id, size_t idlen, const char *params) {
    char *path = string_member(params, "path");
    char *text = string_member(params, "text");
    if (!path || !text) {
        free(path);
        free(text);
        return error(id, idlen, INVALID_PARAMS, "write takes \"path\" and \"text\"", 0);
    }
    FILE *f = fopen(path, "w");
    int err = errno;
    if (f && (fputs(text, f) < 0 || fclose(f) != 0)) err = errno, f = NULL;
    char what[300];
    snprintf(what, sizeof what, "write %s", path);
    free(path);
    free(text);
    if (!f) return error(id, idlen, FAILED_PRECONDITION, what, err);
    begin_result(id, idlen);
    fputs("true", stdout);
    end();
}

static void env(const char *id, size_t idlen, const char *params) {
    char *name = string_member(params, "name");
    if (!name) return error(id, idlen, INVALID_PARAMS, "missing parameter \"name\"", 0);
    const char *value = getenv(name);
    free(name);
    begin_result(id, idlen);
    if (value) put_string(value);
    else fputs("null", stdout);
    end();
}

/* The block alloc holds: volatile, so that the compiler cannot see that it
 * is never read and leave out malloc and memset altogether. */
static char *volatile held;

/* Allocates and touches `mb` MiB; answers whether it could. */
static void alloc(const char *id, size_t idlen, const char *params) {
    const char *v, *vend;
    if (!params || !member(params, "mb", &v, &vend)) {
        return error(id, idlen, INVALID_PARAMS, "missing parameter \"mb\"", 0);
    }
    size_t size = (size_t)strtoul(v, NULL, 10) << 20;
    held = malloc(size);
    if (held) memset(held, 1, size);
    begin_result(id, idlen);
    printf("{\"allocated\":%s}", held ? "true" : "false");
    end();
    free(held);
    held = NULL;
}

/* Never returns: what a buggy module does. Only the host can stop it. */
static void spin(void) {
    volatile unsigned long n = 0;
    for (;;) n++;
}

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        const char *id = NULL, *idend = NULL, *m, *mend, *params = NULL, *pend = NULL;
        if (!member(line, "method", &m, &mend) || *m != '"') continue;
        int has_id = member(line, "id", &id, &idend);
        member(line, "params", &params, &pend);
        size_t mlen = (size_t)(mend - m - 2), idlen = has_id ? (size_t)(idend - id) : 0;
        m++;
#define IS(name) (mlen == strlen(name) && strncmp(m, name, mlen) == 0)
        if (!has_id) {
            /* A notification: `shutdown` ends the module, others are ignored. */
            if (IS("shutdown")) break;
            continue;
        }
        if (IS("initialize")) {
            begin_result(id, idlen);
            fputs("{\"name\":\"wasm-echo\",\"version\":\"0.1.0\"}", stdout);
            end();
        } else if (IS("ping")) {
            begin_result(id, idlen);
            fputs("\"pong\"", stdout);
            end();
        } else if (IS("echo")) {
            begin_result(id, idlen);
            if (params) printf("%.*s", (int)(pend - params), params);
            else fputs("null", stdout);
            end();
        } else if (IS("read")) {
            read_file(id, idlen, params);
        } else if (IS("write")) {
            write_file(id, idlen, params);
        } else if (IS("env")) {
            env(id, idlen, params);
        } else if (IS("alloc")) {
            alloc(id, idlen, params);
        } else if (IS("spin")) {
            spin();
        } else {
            char what[200];
            snprintf(what, sizeof what, "module wasm-echo has no method \"%.*s\"", (int)mlen, m);
            error(id, idlen, METHOD_NOT_FOUND, what, 0);
        }
#undef IS
    }
    free(line);
    return 0;
}
