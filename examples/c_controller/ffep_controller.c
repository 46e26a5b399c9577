/*
 * A reference robot controller in C for the factoryfloor edge protocol, version 2 (FFEP/2). The
 * contract is docs/protocol.md; "§N" below points at its section N.
 *
 * It shows what a real robot's C/C++ controller implements: the handshake and its distrust of
 * the server's WELCOME (§5), a fixed-rate loop on CLOCK_MONOTONIC that may run k times faster
 * than the policy (§7, multi-rate), the wire checks on every frame (§2) and every ACTION (§7:
 * session, answered sequence, age via the echoed timestamp, size, finite values), clipping to
 * the action limits of its own HELLO, and the hold window after which it brakes and latches a
 * fault. The "robot" is a point that integrates the first three action components as a delta
 * command (a stand-in for the vendor's motion interface).
 *
 * Usage: ffep_controller ENDPOINT HELLO.json OBS_SIZE ACTION_SIZE CYCLES RATE_HZ [HOLD_MS [K]]
 *   HELLO.json   the HELLO payload to send, as is (its protocol_version must be 2)
 *   CYCLES       loop cycles to run
 *   RATE_HZ      the policy rate: must equal the HELLO's control_rate_hz
 *   HOLD_MS      hold window (default 20 ms)
 *   K            loop multiple, 1..100 (default 1): the loop runs at K * RATE_HZ and sends one
 *                OBSERVATION every K-th cycle. The HELLO file must then state
 *                "loop_rate_hz": K * RATE_HZ (checked here: this program sends the file as is,
 *                so a file that disagrees with K is a usage error, not something to patch).
 * Prints one JSON line of results; exit 0 on success, 3 on a latched fault, 2 on bad usage or a
 * refused handshake (by the server, or by this controller distrusting the WELCOME).
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zmq_min.h"

enum { VERSION = 2 };
enum { HELLO = 1, WELCOME, OBSERVATION, ACTION, HEARTBEAT, ERROR, BYE, DESCRIBE, DESCRIPTION };
enum { SESSION_CLOSED = 18 };
enum { HEADER = 48, MAX_JSON = 65536, MAX_FRAME = HEADER + MAX_JSON, FLAG_EPISODE_START = 1 };
enum { MAX_VALUES = 4096 };

typedef struct {
    uint8_t version, type;
    uint16_t flags;
    uint32_t payload_len, session_id;
    uint64_t seq, ack_seq, t_send_ns, t_echo_ns;
} header_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t_ns) {
    struct timespec ts = {(time_t)(t_ns / 1000000000ull), (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ------------------------------------------------------------------ frames (§2, §3) ---- */

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static float get_f32(const uint8_t *p) {
    uint32_t bits = (uint32_t)get_le(p, 4);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void put_f32(uint8_t *p, float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    put_le(p, bits, 4);
}

/* Header at the documented offsets (§2). */
static void encode_header(uint8_t *b, const header_t *h) {
    memcpy(b, "FFEP", 4);
    b[4] = VERSION;
    b[5] = h->type;
    put_le(b + 6, h->flags, 2);
    put_le(b + 8, h->payload_len, 4);
    put_le(b + 12, h->session_id, 4);
    put_le(b + 16, h->seq, 8);
    put_le(b + 24, h->ack_seq, 8);
    put_le(b + 32, h->t_send_ns, 8);
    put_le(b + 40, h->t_echo_ns, 8);
}

/* 0 when the frame is well formed, else the code of §4 it breaks, checked in §4's order:
 * length >= 48 and magic, version, a known type, payload_len equal to the frame's and within
 * the type's limits (§3), no reserved flag bit (none is allowed on what a server sends). */
static int decode_header(const uint8_t *b, int len, header_t *h) {
    static const int min_len[10] = {0, 2, 2, 0, 0, 0, 2, 0, 0, 2};
    static const int max_len[10] = {0, MAX_JSON, MAX_JSON, 4 * MAX_VALUES, 4 * MAX_VALUES, 0,
                                    2 + 1024, 0, 0, MAX_JSON};
    if (len < HEADER || len > MAX_FRAME || memcmp(b, "FFEP", 4) != 0) return 1; /* BAD_MAGIC */
    h->version = b[4];
    h->type = b[5];
    h->flags = (uint16_t)get_le(b + 6, 2);
    h->payload_len = (uint32_t)get_le(b + 8, 4);
    h->session_id = (uint32_t)get_le(b + 12, 4);
    h->seq = get_le(b + 16, 8);
    h->ack_seq = get_le(b + 24, 8);
    h->t_send_ns = get_le(b + 32, 8);
    h->t_echo_ns = get_le(b + 40, 8);
    if (h->version != VERSION) return 2;               /* BAD_VERSION */
    if (h->type < HELLO || h->type > DESCRIPTION) return 3; /* BAD_TYPE */
    long n = (long)h->payload_len;
    if (n != len - HEADER || n < min_len[h->type] || n > max_len[h->type]) return 4; /* BAD_LENGTH */
    if ((h->type == OBSERVATION || h->type == ACTION) && n % 4) return 4;
    if (h->flags != 0) return 5; /* BAD_FLAGS: EPISODE_START is for OBSERVATION, ours only */
    return 0;
}

static int send_msg(void *sock, header_t *h, const void *payload, uint32_t len) {
    static uint8_t frame[MAX_FRAME];
    h->payload_len = len;
    encode_header(frame, h);
    if (len) memcpy(frame + HEADER, payload, len);
    return zmq_send(sock, frame, HEADER + len, ZMQ_DONTWAIT);
}

/* One frame into buf (its length; above MAX_FRAME means it was cut), or -1 once deadline_ns
 * has passed. A deadline in the past makes it a non-blocking read. zmq_poll counts in whole
 * milliseconds, so the last millisecond is waited in short sleeps (no overshoot into the next
 * loop cycle). */
static int recv_frame(void *sock, uint8_t *buf, uint64_t deadline_ns) {
    for (;;) {
        int n = zmq_recv(sock, buf, MAX_FRAME, ZMQ_DONTWAIT);
        if (n >= 0) return n;
        uint64_t t = now_ns();
        if (t >= deadline_ns) return -1;
        uint64_t left = deadline_ns - t;
        if (left >= 1000000ull) {
            zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
            zmq_poll(&item, 1, (long)(left / 1000000ull));
        } else {
            sleep_until(t + (left < 100000ull ? left : 100000ull));
        }
    }
}

/* ------------------------------------------------ a small, strict JSON reader (§5) ---- */
/* json_skip() checks the syntax of one value and returns the text just past it, or NULL when
 * it breaks JSON or the limits of §5 (nesting 16, numbers of 32 characters, strings of 4,096).
 * The getters below read the few values this controller needs from text json_skip() checked:
 * a key it reads must be present once (a duplicate is refused), numbers must parse completely
 * and be finite. Keys it does not read are skipped, as §5 says. UTF-8 is not validated
 * (strings are compared byte for byte) and \u escapes of surrogate pairs are not joined: such a
 * string compares unequal, which refuses the session (the safe side). */
typedef struct {
    const char *p, *end; /* one JSON value's text */
} span_t;

static const char *ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *digits(const char *p, const char *end) {
    while (p < end && isdigit((unsigned char)*p)) p++;
    return p;
}

static const char *skip_string(const char *p, const char *end) { /* p at the opening quote */
    long chars = 0;
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return chars <= 4096 ? p + 1 : NULL;
        if (c < 0x20) return NULL;
        if ((c & 0xC0) != 0x80) chars++; /* count characters, not UTF-8 continuation bytes */
        if (c == '\\') {
            if (++p >= end) return NULL;
            if (*p == 'u') {
                for (int i = 0; i < 4; i++)
                    if (++p >= end || !isxdigit((unsigned char)*p)) return NULL;
            } else if (*p == '\0' || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
    }
    return NULL;
}

static const char *skip_number(const char *p, const char *end) {
    const char *start = p;
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') p++;
    else if (p < end && isdigit((unsigned char)*p)) p = digits(p, end);
    else return NULL;
    if (p < end && *p == '.') {
        const char *q = digits(p + 1, end);
        if (q == p + 1) return NULL;
        p = q;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const char *q = digits(p, end);
        if (q == p) return NULL;
        p = q;
    }
    return p - start <= 32 ? p : NULL;
}

static const char *json_skip(const char *p, const char *end, int depth) {
    p = ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end);
    if (*p == '-' || isdigit((unsigned char)*p)) return skip_number(p, end);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        if (depth > 16) return NULL;
        p = ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (;;) {
            if (close == '}') { /* a member: "key": value */
                if (p >= end || *p != '"' || !(p = skip_string(p, end))) return NULL;
                p = ws(p, end);
                if (p >= end || *p++ != ':') return NULL;
            }
            if (!(p = json_skip(p, end, depth + 1))) return NULL;
            p = ws(p, end);
            if (p < end && *p == ',') {
                p = ws(p + 1, end);
                continue;
            }
            return p < end && *p == close ? p + 1 : NULL;
        }
    }
    static const char *const literals[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(literals[i]);
        if ((size_t)(end - p) >= n && memcmp(p, literals[i], n) == 0) return p + n;
    }
    return NULL;
}

/* The top-level object of a payload (§5: one object, nothing after it), or -1. */
static int json_parse(const char *text, size_t len, span_t *obj) {
    const char *end = text + len, *p = ws(text, end);
    if (len > MAX_JSON || p >= end || *p != '{') return -1;
    const char *after = json_skip(p, end, 1);
    if (!after || ws(after, end) != end) return -1;
    obj->p = p;
    obj->end = after;
    return 0;
}

static unsigned hex4(const char *p) {
    char tmp[5] = {p[0], p[1], p[2], p[3], 0};
    return (unsigned)strtoul(tmp, NULL, 16);
}

/* The text of a string value, unescaped into out (NUL-terminated); its length, or -1 when v is
 * not a string or does not fit. */
static int json_text(span_t v, char *out, size_t cap) {
    size_t n = 0;
    if (v.p >= v.end || *v.p != '"') return -1;
    for (const char *p = v.p + 1; p < v.end - 1; p++) {
        unsigned c = (unsigned char)*p; /* a raw byte (UTF-8 is copied as is) */
        int code_point = 0;             /* set for \uXXXX: c is a code point to encode */
        if (c == '\\') {
            char e = *++p;
            if (e == 'u') {
                c = hex4(p + 1);
                p += 4;
                code_point = 1;
            } else {
                c = e == 'b' ? 8u : e == 'f' ? 12u : e == 'n' ? 10u : e == 'r' ? 13u
                  : e == 't' ? 9u : (unsigned char)e;
            }
        }
        uint8_t utf8[3] = {(uint8_t)c, 0, 0};
        int len = 1;
        if (code_point && c >= 0x800) {
            utf8[0] = (uint8_t)(0xE0 | (c >> 12));
            utf8[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            utf8[2] = (uint8_t)(0x80 | (c & 0x3F));
            len = 3;
        } else if (code_point && c >= 0x80) {
            utf8[0] = (uint8_t)(0xC0 | (c >> 6));
            utf8[1] = (uint8_t)(0x80 | (c & 0x3F));
            len = 2;
        }
        if (c == 0 || n + (size_t)len >= cap) return -1; /* \u0000 would cut the C string */
        memcpy(out + n, utf8, (size_t)len);
        n += (size_t)len;
    }
    out[n] = '\0';
    return (int)n;
}

/* Finds key among the members of obj: 1 found once (*val is its value), 0 absent, -1 twice. */
static int json_get(span_t obj, const char *key, span_t *val) {
    int found = 0;
    char name[128];
    const char *p = ws(obj.p + 1, obj.end);
    while (p < obj.end && *p == '"') {
        span_t k = {p, skip_string(p, obj.end)};
        const char *v = ws(ws(k.end, obj.end) + 1, obj.end); /* past the ':' */
        const char *after = json_skip(v, obj.end, 1);
        if (json_text(k, name, sizeof name) >= 0 && strcmp(name, key) == 0) {
            found++;
            val->p = v;
            val->end = after;
        }
        p = ws(after, obj.end);
        if (p < obj.end && *p == ',') p = ws(p + 1, obj.end);
    }
    return found > 1 ? -1 : found;
}

/* The next element of an array: *it starts as the array's span; 0 after the last element. */
static int json_next(span_t *it, span_t *item) {
    const char *p = ws(it->p + 1, it->end); /* past the '[' or ',' */
    if (p >= it->end || *p == ']') return 0;
    item->p = p;
    item->end = json_skip(p, it->end, 1);
    it->p = ws(item->end, it->end);
    return 1;
}

/* A number that parses completely and is finite (strtod would also take "inf", "0x1p3" or a
 * prefix of "50ms"; the syntax check in json_skip() already refused those). */
static int json_number(span_t v, double *out) {
    char tmp[40], *stop;
    size_t n = (size_t)(v.end - v.p);
    if (n == 0 || n > 32 || !(*v.p == '-' || isdigit((unsigned char)*v.p))) return -1;
    memcpy(tmp, v.p, n);
    tmp[n] = '\0';
    *out = strtod(tmp, &stop);
    return stop == tmp + n && isfinite(*out) ? 0 : -1;
}

/* get_number: 1 with *out set, 0 absent, -1 present but not a finite number (or twice). */
static int get_number(span_t obj, const char *key, double *out) {
    span_t v;
    int found = json_get(obj, key, &v);
    if (found <= 0) return found;
    return json_number(v, out) == 0 ? 1 : -1;
}

/* get_string: 1 with buf set, 0 absent or null, -1 present but not a string (or twice). */
static int get_string(span_t obj, const char *key, char *buf, size_t cap) {
    span_t v;
    int found = json_get(obj, key, &v);
    if (found <= 0) return found;
    if (v.end - v.p == 4 && memcmp(v.p, "null", 4) == 0) return 0;
    return json_text(v, buf, cap) >= 0 ? 1 : -1;
}

/* Values in a payload of a spec (a list of fields): the product of each field's "shape",
 * summed (§5: a shape is at most 8 integers in 0..65,536). -1 when it is not such a list. */
static long spec_values(span_t obj, const char *key) {
    span_t list, field, shape, dim;
    if (json_get(obj, key, &list) != 1 || *list.p != '[') return -1;
    long total = 0;
    while (json_next(&list, &field)) {
        if (*field.p != '{' || json_get(field, "shape", &shape) != 1 || *shape.p != '[') return -1;
        long size = 1;
        int dims = 0;
        double d;
        while (json_next(&shape, &dim)) {
            if (++dims > 8 || json_number(dim, &d) != 0 || d != floor(d) || d < 0 || d > 65536)
                return -1;
            size *= (long)d;
            if (size > MAX_VALUES) return -1;
        }
        total += size;
        if (total > MAX_VALUES) return -1;
    }
    return total;
}

/* The n numbers of the array field[key] into out, or -1. */
static int get_floats(span_t field, const char *key, float *out, int n) {
    span_t list, item;
    double d;
    int i = 0;
    if (json_get(field, key, &list) != 1 || *list.p != '[') return -1;
    while (json_next(&list, &item)) {
        if (i >= n || json_number(item, &d) != 0) return -1;
        out[i++] = (float)d;
    }
    return i == n ? 0 : -1;
}

static int same_rate(double a, double b) { /* equal within a relative 1e-9 (§5) */
    return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b));
}

/* ------------------------------------------------------------ handshake (§5) ---------- */

/* What this controller's own HELLO states; the WELCOME must agree with it. */
typedef struct {
    char task_id[512], robot[512], schema[80], model[512]; /* model "": none pinned (null) */
    double control_rate_hz, loop_rate_hz;                 /* loop_rate_hz 0: not stated */
    float *low, *high;                                    /* the action limits */
} hello_t;

/* Reads the HELLO file's fields; NULL when they are usable, else what is wrong. */
static const char *read_hello(const char *text, size_t len, int obs_size, int act_size,
                              hello_t *h) {
    span_t obj, list, field;
    double version;
    if (json_parse(text, len, &obj) != 0) return "not a JSON object within the limits of §5";
    if (get_number(obj, "protocol_version", &version) != 1 || version != VERSION)
        return "protocol_version must be 2";
    if (get_string(obj, "task_id", h->task_id, sizeof h->task_id) != 1 ||
        get_string(obj, "robot", h->robot, sizeof h->robot) != 1)
        return "task_id and robot must be strings";
    if (get_string(obj, "schema_sha256", h->schema, sizeof h->schema) != 1 || strlen(h->schema) != 64)
        return "schema_sha256 must be 64 hex digits";
    if (get_string(obj, "model_sha256", h->model, sizeof h->model) < 0)
        return "model_sha256 must be a string or null";
    if (get_number(obj, "control_rate_hz", &h->control_rate_hz) != 1 || h->control_rate_hz <= 0)
        return "control_rate_hz must be a positive number";
    int stated = get_number(obj, "loop_rate_hz", &h->loop_rate_hz);
    if (stated < 0 || (stated == 1 && !(h->loop_rate_hz > 0)))
        return "loop_rate_hz must be a positive number";
    if (spec_values(obj, "observation") != obs_size) return "observation values are not OBS_SIZE";
    if (spec_values(obj, "action") != act_size) return "action values are not ACTION_SIZE";
    h->low = calloc((size_t)act_size, sizeof(float));
    h->high = calloc((size_t)act_size, sizeof(float));
    json_get(obj, "action", &list);
    if (!json_next(&list, &field) || get_floats(field, "low", h->low, act_size) != 0 ||
        get_floats(field, "high", h->high, act_size) != 0)
        return "the action field needs low and high, one number per value";
    return NULL;
}

/* A controller distrusts WELCOME (§5): NULL when the session may start, else why it is refused.
 * Checks: the header's session_id is non-zero; protocol_version is 2; session_id equals the
 * header's; task_id, robot, control_rate_hz, schema_sha256 and (when the WELCOME states it)
 * loop_rate_hz equal the HELLO's; the observation and action specs carry OBS_SIZE and
 * ACTION_SIZE values (this program does not recompute the schema hash: it compares the hash
 * string and counts the values, which catches a server that claims our hash with other sizes);
 * model_sha256 is a string, equal to the HELLO's when the HELLO pins one; max_action_age_ms is
 * a finite number in (0, 10,000]. */
static const char *check_welcome(const uint8_t *payload, uint32_t len, uint32_t header_session,
                                 const hello_t *h, double loop_rate_hz, int obs_size,
                                 int act_size, double *max_age_ms) {
    static char why[160];
    span_t obj;
    double d;
    char text[512];
    long n;
    if (json_parse((const char *)payload, len, &obj) != 0)
        return "payload is not a JSON object within the limits of §5";
    if (header_session == 0) return "header session_id is 0";
    if (get_number(obj, "protocol_version", &d) != 1 || d != VERSION)
        return "protocol_version is not 2";
    if (get_number(obj, "session_id", &d) != 1 || d != (double)header_session)
        return "session_id differs from the header's";
    if (get_string(obj, "task_id", text, sizeof text) != 1 || strcmp(text, h->task_id) != 0)
        return "task_id differs from the HELLO's";
    if (get_string(obj, "robot", text, sizeof text) != 1 || strcmp(text, h->robot) != 0)
        return "robot differs from the HELLO's";
    if (get_number(obj, "control_rate_hz", &d) != 1 || !same_rate(d, h->control_rate_hz))
        return "control_rate_hz differs from the HELLO's";
    int stated = get_number(obj, "loop_rate_hz", &d);
    if (stated < 0 || (stated == 1 && !same_rate(d, loop_rate_hz)))
        return "loop_rate_hz differs from the HELLO's";
    if (get_string(obj, "schema_sha256", text, sizeof text) != 1 || strcmp(text, h->schema) != 0)
        return "schema_sha256 differs from the HELLO's";
    if ((n = spec_values(obj, "observation")) < 0) return "observation is not a list of fields";
    if (n != obs_size) {
        snprintf(why, sizeof why, "observation spec has %ld values, OBS_SIZE is %d", n, obs_size);
        return why;
    }
    if ((n = spec_values(obj, "action")) < 0) return "action is not a list of fields";
    if (n != act_size) {
        snprintf(why, sizeof why, "action spec has %ld values, ACTION_SIZE is %d", n, act_size);
        return why;
    }
    if (get_string(obj, "model_sha256", text, sizeof text) != 1)
        return "model_sha256 is not a string";
    if (h->model[0] && strcmp(text, h->model) != 0) return "model_sha256 is not the pinned model";
    if (get_number(obj, "max_action_age_ms", max_age_ms) != 1 || !(*max_age_ms > 0) ||
        *max_age_ms > 10000)
        return "max_action_age_ms is not a finite number in (0, 10000]";
    return NULL;
}

/* ------------------------------------------------------- the control loop (§6, §7) ---- */

typedef struct {
    void *sock;
    uint32_t session;
    int act_size;
    uint64_t max_age_ns, obs_seq, last_ack, last_fresh_ns, bye_seq, max_gap_ns;
    const float *low, *high;
    float *command;        /* the newest valid action, clipped: one policy period's delta */
    uint64_t *rtt;         /* round trip of each fresh action */
    const char *fault;     /* why the fault latched; NULL while running */
    int fresh, rejected, clipped, malformed, unexpected, errors, heartbeats, bye_answered, n_rtt;
} ctl_t;

/* Brake (zero command) and latch the fault: nothing moves until an operator re-arms (§7). */
static void brake(ctl_t *c, const char *why) {
    memset(c->command, 0, (size_t)c->act_size * sizeof(float));
    if (!c->fault) fprintf(stderr, "FAULT: %s: braking, fault latched\n", why);
    if (!c->fault) c->fault = why;
}

/* An ACTION is valid (§7) only for the current session, answering an OBSERVATION newer than
 * the last applied one and not above the last sent, younger than max_action_age_ms on our
 * clock (age = now - t_echo_ns, §6), of the spec's size, every value finite. The newest valid
 * one replaces the command. Returns 1 when it answers the newest OBSERVATION. */
static int on_action(ctl_t *c, const header_t *r, const uint8_t *payload, uint64_t t) {
    if (r->session_id != c->session || r->ack_seq <= c->last_ack || r->ack_seq > c->obs_seq ||
        r->t_echo_ns > t || t - r->t_echo_ns >= c->max_age_ns ||
        (int)r->payload_len != 4 * c->act_size) {
        c->rejected++;
        return 0;
    }
    for (int i = 0; i < c->act_size; i++) {
        if (!isfinite(get_f32(payload + 4 * i))) {
            c->rejected++;
            return 0;
        }
    }
    for (int i = 0; i < c->act_size; i++) { /* clip to the limits of our HELLO, and flag it */
        float a = get_f32(payload + 4 * i);
        float v = a > c->high[i] ? c->high[i] : (a < c->low[i] ? c->low[i] : a);
        c->clipped += v != a;
        c->command[i] = v;
    }
    c->last_ack = r->ack_seq;
    if (t - c->last_fresh_ns > c->max_gap_ns) c->max_gap_ns = t - c->last_fresh_ns;
    c->last_fresh_ns = t;
    c->rtt[c->n_rtt++] = t - r->t_echo_ns;
    c->fresh++;
    return r->ack_seq == c->obs_seq;
}

/* A peer's text on stderr, control characters shown as '?' (it is not ours to trust). */
static void print_text(const uint8_t *text, int len) {
    for (int i = 0; i < len; i++) fputc(text[i] < 0x20 || text[i] == 0x7F ? '?' : text[i], stderr);
    fputc('\n', stderr);
}

/* Every v2 type a controller may receive (§3); anything else is counted and ignored. */
static int on_frame(ctl_t *c, const uint8_t *buf, int n) {
    header_t r;
    uint64_t t = now_ns();
    if (decode_header(buf, n, &r) != 0) {
        c->malformed++;
        return 0;
    }
    switch (r.type) {
    case ACTION:
        return on_action(c, &r, buf + HEADER, t);
    case ERROR: { /* counted, never answered (§3); SESSION_CLOSED for our session: brake now */
        unsigned code = (unsigned)get_le(buf + HEADER, 2);
        c->errors++;
        fprintf(stderr, "server ERROR code %u (session %u): ", code, r.session_id);
        print_text(buf + HEADER + 2, (int)r.payload_len - 2);
        if (code == SESSION_CLOSED && r.session_id == c->session)
            brake(c, "SESSION_CLOSED: the server closed the session");
        return 0;
    }
    case HEARTBEAT: /* the answer to a HEARTBEAT (this loop sends OBSERVATIONs instead) */
        c->heartbeats++;
        return 0;
    case BYE: /* the answer to our BYE; any other BYE for our session means it is gone */
        if (r.session_id != c->session) c->unexpected++;
        else if (c->bye_seq && r.ack_seq == c->bye_seq) c->bye_answered = 1;
        else brake(c, "the server ended the session with BYE");
        return 0;
    default: /* WELCOME, DESCRIPTION or a type a server does not send */
        c->unexpected++;
        return 0;
    }
}

/* Handles every frame waiting, newest action last; waits for more until wait_until (0: do not
 * wait), but no longer once the answer to the newest OBSERVATION came or the fault latched. */
static void receive(ctl_t *c, uint64_t wait_until) {
    static uint8_t buf[MAX_FRAME];
    int n;
    while (!c->fault && (n = recv_frame(c->sock, buf, wait_until)) >= 0)
        if (on_frame(c, buf, n)) wait_until = 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static char *read_file(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = *size > 0 ? malloc((size_t)*size) : NULL;
    if (buf && fread(buf, 1, (size_t)*size, f) != (size_t)*size) *size = -1;
    fclose(f);
    return buf;
}

/* A command-line number that parses completely (no atof: "20ms" or "" are errors). */
static int arg_number(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return *s && !*end && !errno && isfinite(*out) && *out >= lo && *out <= hi;
}

static void json_string_out(const char *s) { /* a JSON string, or null */
    if (!s) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned char)*s);
        else putchar(*s);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    double obs_d, act_d, cycles_d, rate_hz, hold_ms = 20.0, k_d = 1;
    if (argc < 7 || argc > 9 || !arg_number(argv[3], 1, MAX_VALUES, &obs_d) ||
        !arg_number(argv[4], 1, MAX_VALUES, &act_d) || !arg_number(argv[5], 1, 1e7, &cycles_d) ||
        !arg_number(argv[6], 1e-3, 1e4, &rate_hz) ||
        (argc > 7 && !arg_number(argv[7], 0, 1000, &hold_ms)) ||
        (argc > 8 && !arg_number(argv[8], 1, 100, &k_d)) || obs_d != floor(obs_d) ||
        act_d != floor(act_d) || cycles_d != floor(cycles_d) || k_d != floor(k_d)) {
        fprintf(stderr, "usage: %s ENDPOINT HELLO.json OBS_SIZE ACTION_SIZE CYCLES RATE_HZ "
                        "[HOLD_MS [K]]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1];
    int obs_size = (int)obs_d, act_size = (int)act_d, cycles = (int)cycles_d, k = (int)k_d;
    double loop_rate_hz = k * rate_hz;
    long hello_len = 0;
    char *hello = read_file(argv[2], &hello_len);
    hello_t me = {0};
    const char *bad = !hello || hello_len <= 0 || hello_len > MAX_JSON ? "unreadable or too large"
                      : read_hello(hello, (size_t)hello_len, obs_size, act_size, &me);
    /* RATE_HZ is the policy rate (§5: HELLO's control_rate_hz). A multi-rate loop (§7) states
     * loop_rate_hz = K * control_rate_hz in its HELLO; the file must say exactly that. */
    if (!bad && !same_rate(me.control_rate_hz, rate_hz))
        bad = "control_rate_hz differs from RATE_HZ";
    if (!bad && (me.loop_rate_hz ? !same_rate(me.loop_rate_hz, loop_rate_hz) : k != 1))
        bad = "loop_rate_hz must be present and equal K * RATE_HZ (absent only when K is 1)";
    if (bad) {
        fprintf(stderr, "bad HELLO file %s: %s\n", argv[2], bad);
        return 2;
    }
    uint64_t loop_ns = (uint64_t)(1e9 / loop_rate_hz), policy_ns = (uint64_t)(1e9 / rate_hz);
    uint64_t hold_ns = (uint64_t)(hold_ms * 1e6);

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, hwm = 4; /* §1: no linger, small queues; we drain every cycle */
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "connect %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 2;
    }
    static uint8_t buf[MAX_FRAME];
    header_t h = {0}, r = {0};
    uint64_t seq = 0;

    /* Handshake (§5, §6): HELLO is seq 1 with session 0; the answer is a WELCOME or an ERROR
     * whose ack_seq and t_echo_ns echo it. Other frames meanwhile are ignored. */
    h.type = HELLO;
    h.seq = ++seq;
    h.t_send_ns = now_ns();
    send_msg(sock, &h, hello, (uint32_t)hello_len);
    uint64_t give_up = now_ns() + 2000000000ull;
    const char *refused = NULL;
    double max_age_ms = 0;
    int n;
    for (;;) {
        n = recv_frame(sock, buf, give_up);
        if (n < 0) {
            refused = "no WELCOME within 2 s";
            break;
        }
        if (decode_header(buf, n, &r) != 0 || r.ack_seq != h.seq) continue;
        if (r.type == ERROR) {
            fprintf(stderr, "handshake refused: code %u: ", (unsigned)get_le(buf + HEADER, 2));
            print_text(buf + HEADER + 2, (int)r.payload_len - 2);
            printf("{\"session_id\": 0, \"handshake_error\": %u}\n", (unsigned)get_le(buf + HEADER, 2));
            return 2;
        }
        if (r.type != WELCOME) continue;
        if (r.t_echo_ns != h.t_send_ns) refused = "t_echo_ns does not echo the HELLO";
        else refused = check_welcome(buf + HEADER, r.payload_len, r.session_id, &me,
                                     loop_rate_hz, obs_size, act_size, &max_age_ms);
        break;
    }
    if (refused) { /* refuse the session: send nothing on it, not even BYE */
        fprintf(stderr, "WELCOME refused: %s\n", refused);
        printf("{\"session_id\": %u, \"welcome_refused\": ", r.session_id);
        json_string_out(refused);
        printf("}\n");
        return 2;
    }

    ctl_t c = {0};
    c.sock = sock;
    c.session = r.session_id;
    c.act_size = act_size;
    c.max_age_ns = (uint64_t)(max_age_ms * 1e6);
    c.low = me.low;
    c.high = me.high;
    c.command = calloc((size_t)act_size, sizeof(float));
    c.rtt = calloc((size_t)(cycles / k + 2), sizeof(uint64_t));
    uint8_t *payload = calloc((size_t)obs_size, 4);
    double pos[3] = {0, 0, 0}; /* the point robot */
    int loop_cycles = 0, observations = 0, held = 0, misses = 0, run = 0, max_run = 0;
    uint64_t t0 = now_ns();
    c.last_fresh_ns = t0;

    /* The loop (§7) runs at K * RATE_HZ. Every cycle: sleep to its start, send an OBSERVATION
     * every K-th cycle, read every waiting frame (non-blocking; after sending an observation it
     * waits for the answer up to 80% of this cycle, never into the next), check the hold
     * deadline, and apply 1/K of the newest valid action (an action commands one policy
     * period, so K cycles apply it once). Time rules, whatever K is:
     *   hold:    a cycle more than one policy period after the last fresh action is HOLD (the
     *            last action is kept); past last fresh + one policy period + the hold window
     *            the controller brakes and latches the fault (exit 3);
     *   overrun: a cycle that starts late is a deadline miss; one that starts later than that
     *            same budget (one policy period + the hold window) brakes: the loop cannot
     *            keep its rate. (K non-finite or stale actions in a row are not a rule of their
     *            own here: they are not fresh, so they spend the hold window.) */
    for (int cycle = 0; cycle < cycles && !c.fault; cycle++) {
        uint64_t due = t0 + (uint64_t)((double)(cycle + 1) * 1e9 / loop_rate_hz);
        uint64_t t = now_ns();
        loop_cycles++;
        if (t > due) {
            misses++;
            if (++run > max_run) max_run = run;
            if (t - due > policy_ns + hold_ns) {
                brake(&c, "loop overran: a cycle started a policy period + hold window late");
                break;
            }
        } else {
            run = 0;
        }
        sleep_until(due);
        int observe = cycle % k == 0;
        if (observe) { /* §6: a new seq each; EPISODE_START on the first */
            for (int i = 0; i < obs_size; i++) put_f32(payload + 4 * i, i < 3 ? (float)pos[i] : 0.0f);
            h.type = OBSERVATION;
            h.flags = cycle == 0 ? FLAG_EPISODE_START : 0;
            h.session_id = c.session;
            h.seq = c.obs_seq = ++seq;
            h.ack_seq = h.t_echo_ns = 0;
            h.t_send_ns = now_ns();
            send_msg(sock, &h, payload, (uint32_t)obs_size * 4);
            observations++;
        }
        receive(&c, observe ? due + loop_ns * 8 / 10 : 0);
        if (c.fault) break; /* SESSION_CLOSED or BYE: braked inside receive() */
        t = now_ns();
        if (t > c.last_fresh_ns + policy_ns + hold_ns) {
            c.max_gap_ns = t - c.last_fresh_ns;
            brake(&c, "hold window spent: no fresh action");
            break;
        }
        if (t > c.last_fresh_ns + policy_ns) held++;
        for (int i = 0; i < 3 && i < act_size; i++) pos[i] += 0.01 * c.command[i] / k;
    }

    /* BYE ends the session (§3) unless the server already closed it; the server answers it. */
    int session_gone = c.fault && (strstr(c.fault, "SESSION_CLOSED") || strstr(c.fault, "BYE"));
    if (!session_gone) {
        h.type = BYE;
        h.flags = 0;
        h.seq = c.bye_seq = ++seq;
        h.ack_seq = h.t_echo_ns = 0;
        h.t_send_ns = now_ns();
        send_msg(sock, &h, NULL, 0);
        uint64_t until = now_ns() + 200000000ull;
        while (!c.bye_answered && (n = recv_frame(sock, buf, until)) >= 0)
            if (decode_header(buf, n, &r) == 0 && r.type == BYE && r.ack_seq == c.bye_seq)
                c.bye_answered = 1;
    }

    qsort(c.rtt, (size_t)c.n_rtt, sizeof(uint64_t), cmp_u64);
    uint64_t p50 = c.n_rtt ? c.rtt[c.n_rtt / 2] : 0, p99 = c.n_rtt ? c.rtt[(c.n_rtt * 99) / 100] : 0;
    uint64_t mx = c.n_rtt ? c.rtt[c.n_rtt - 1] : 0;
    /* "cycles" is the v1 name of loop_cycles, kept for its readers. */
    printf("{\"session_id\": %u, \"loop_rate_hz\": %.9g, \"cycles\": %d, \"loop_cycles\": %d, "
           "\"observations_sent\": %d, \"fresh\": %d, \"held\": %d, \"rejected\": %d, "
           "\"clipped\": %d, \"malformed\": %d, \"unexpected\": %d, \"errors_received\": %d, "
           "\"heartbeats\": %d, \"deadline_misses\": %d, \"max_consecutive_misses\": %d, "
           "\"max_fresh_gap_ms\": %.3f, \"bye_answered\": %s, \"fault\": %s, \"fault_reason\": ",
           c.session, loop_rate_hz, loop_cycles, loop_cycles, observations, c.fresh, held,
           c.rejected, c.clipped, c.malformed, c.unexpected, c.errors, c.heartbeats, misses,
           max_run, c.max_gap_ns / 1e6, c.bye_answered ? "true" : "false",
           c.fault ? "true" : "false");
    json_string_out(c.fault);
    printf(", \"welcome_refused\": null, \"position\": [%.9g, %.9g, %.9g], \"rtt_us\": "
           "{\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}}\n",
           pos[0], pos[1], pos[2], p50 / 1e3, p99 / 1e3, mx / 1e3);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    free(hello);
    free(me.low);
    free(me.high);
    free(c.command);
    free(c.rtt);
    free(payload);
    return c.fault ? 3 : 0;
}
