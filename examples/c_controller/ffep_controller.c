/*
 * A reference robot controller in C for the factoryfloor edge protocol (FFEP/1, docs/protocol.md).
 *
 * It shows what a real robot's C/C++ controller implements: the handshake, a fixed-rate loop on
 * CLOCK_MONOTONIC, the wire checks on every ACTION (session, answered sequence, age via the
 * echoed timestamp, size, finite values), clipping to the action limits, and the hold window
 * after which it brakes and latches a fault. The "robot" is a point that integrates the first
 * three action components (a stand-in for the vendor's motion interface).
 *
 * Usage: ffep_controller ENDPOINT HELLO.json OBS_SIZE ACTION_SIZE CYCLES RATE_HZ [HOLD_MS]
 * Prints one JSON line of results; exit 0 on success, 3 on a latched fault, 2 on bad usage or a
 * refused handshake.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zmq_min.h"

enum { HELLO = 1, WELCOME = 2, OBSERVATION = 3, ACTION = 4, ERROR = 6, BYE = 7 };
enum { HEADER = 48, MAX_FRAME = 48 + 65536, FLAG_EPISODE_START = 1 };

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

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Header at the documented offsets (section 2 of docs/protocol.md). */
static void encode_header(uint8_t *b, const header_t *h) {
    memcpy(b, "FFEP", 4);
    b[4] = 1;
    b[5] = h->type;
    put_le(b + 6, h->flags, 2);
    put_le(b + 8, h->payload_len, 4);
    put_le(b + 12, h->session_id, 4);
    put_le(b + 16, h->seq, 8);
    put_le(b + 24, h->ack_seq, 8);
    put_le(b + 32, h->t_send_ns, 8);
    put_le(b + 40, h->t_echo_ns, 8);
}

/* 0 when the frame is well formed (magic, version, length), -1 otherwise. */
static int decode_header(const uint8_t *b, int len, header_t *h) {
    if (len < HEADER || memcmp(b, "FFEP", 4) != 0 || b[4] != 1) return -1;
    h->version = b[4];
    h->type = b[5];
    h->flags = (uint16_t)get_le(b + 6, 2);
    h->payload_len = (uint32_t)get_le(b + 8, 4);
    h->session_id = (uint32_t)get_le(b + 12, 4);
    h->seq = get_le(b + 16, 8);
    h->ack_seq = get_le(b + 24, 8);
    h->t_send_ns = get_le(b + 32, 8);
    h->t_echo_ns = get_le(b + 40, 8);
    return (int)h->payload_len == len - HEADER ? 0 : -1;
}

static int send_msg(void *sock, header_t *h, const void *payload, uint32_t len) {
    static uint8_t frame[MAX_FRAME];
    h->payload_len = len;
    encode_header(frame, h);
    if (len) memcpy(frame + HEADER, payload, len);
    return zmq_send(sock, frame, HEADER + len, ZMQ_DONTWAIT);
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
    char *buf = malloc((size_t)*size);
    if (buf && fread(buf, 1, (size_t)*size, f) != (size_t)*size) *size = -1;
    fclose(f);
    return buf;
}

/* Wait for one frame until deadline_ns; returns its length, or -1 on timeout. */
static int recv_until(void *sock, uint8_t *buf, uint64_t deadline_ns) {
    for (;;) {
        int n = zmq_recv(sock, buf, MAX_FRAME, ZMQ_DONTWAIT);
        if (n >= 0) return n > MAX_FRAME ? -2 : n;
        uint64_t t = now_ns();
        if (t >= deadline_ns) return -1;
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        long ms = (long)((deadline_ns - t + 999999) / 1000000);
        if (zmq_poll(&item, 1, ms) < 0 && zmq_errno() != EINTR) return -1;
    }
}

static void sleep_until(uint64_t t_ns) {
    struct timespec ts = {(time_t)(t_ns / 1000000000ull), (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s ENDPOINT HELLO.json OBS_SIZE ACTION_SIZE CYCLES RATE_HZ [HOLD_MS]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1];
    int obs_size = atoi(argv[3]), act_size = atoi(argv[4]), cycles = atoi(argv[5]);
    double rate_hz = atof(argv[6]), hold_ms = argc > 7 ? atof(argv[7]) : 20.0;
    long hello_len = 0;
    char *hello = read_file(argv[2], &hello_len);
    if (!hello || hello_len <= 0 || obs_size <= 0 || act_size <= 0 || cycles <= 0 || rate_hz <= 0) {
        fprintf(stderr, "bad arguments or unreadable %s\n", argv[2]);
        return 2;
    }
    uint64_t period_ns = (uint64_t)(1e9 / rate_hz), hold_ns = (uint64_t)(hold_ms * 1e6);
    uint64_t max_age_ns = 50000000ull; /* the server's max_action_age_ms default */

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, hwm = 4;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "connect %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 2;
    }
    static uint8_t buf[MAX_FRAME];
    header_t h = {0}, r;
    uint64_t seq = 0;

    /* Handshake: HELLO, then WELCOME (its header carries the session id) or ERROR. */
    h.type = HELLO;
    h.seq = ++seq;
    h.t_send_ns = now_ns();
    send_msg(sock, &h, hello, (uint32_t)hello_len);
    int n = recv_until(sock, buf, now_ns() + 2000000000ull);
    if (n < 0 || decode_header(buf, n, &r) != 0 || r.type != WELCOME || r.ack_seq != h.seq) {
        if (n >= HEADER + 2 && decode_header(buf, n, &r) == 0 && r.type == ERROR)
            fprintf(stderr, "handshake refused: code %u: %.*s\n", (unsigned)get_le(buf + HEADER, 2),
                    n - HEADER - 2, (const char *)buf + HEADER + 2);
        else
            fprintf(stderr, "no WELCOME from %s\n", endpoint);
        return 2;
    }
    uint32_t session = r.session_id;
    const char *age = strstr((const char *)buf + HEADER, "\"max_action_age_ms\":");
    if (age) max_age_ns = (uint64_t)(atof(age + 20) * 1e6);

    float *state = calloc((size_t)obs_size, sizeof(float));
    float *command = calloc((size_t)act_size, sizeof(float));
    uint64_t *rtt = calloc((size_t)cycles, sizeof(uint64_t));
    uint8_t *payload = malloc((size_t)obs_size * 4);
    int fresh = 0, held = 0, rejected = 0, misses = 0, clipped = 0, fault = 0, n_rtt = 0;
    uint64_t last_ack = 0, last_fresh = now_ns(), due = now_ns();

    for (int k = 0; k < cycles && !fault; k++) {
        due += period_ns;
        if (now_ns() > due) misses++;
        sleep_until(due);
        for (int i = 0; i < obs_size; i++) put_f32(payload + 4 * i, state[i]);
        h.type = OBSERVATION;
        h.flags = k == 0 ? FLAG_EPISODE_START : 0;
        h.session_id = session;
        h.seq = ++seq;
        h.ack_seq = 0;
        h.t_send_ns = now_ns();
        send_msg(sock, &h, payload, (uint32_t)obs_size * 4);
        uint64_t hold_deadline = last_fresh + period_ns + hold_ns;
        uint64_t wait_until = due + period_ns * 8 / 10;
        if (wait_until > hold_deadline) wait_until = hold_deadline;
        /* Wait for the answer to this observation; an answer to an earlier one that came late
         * is kept and used only at the deadline (using it at once would lock the loop into
         * applying every action one cycle late). */
        int got = 0, late = 0;
        uint64_t late_ack = 0, late_rtt = 0;
        while (!got && (n = recv_until(sock, buf, wait_until)) >= 0) {
            uint64_t t = now_ns();
            if (decode_header(buf, n, &r) != 0 || r.type != ACTION || r.session_id != session ||
                r.ack_seq <= last_ack || r.ack_seq > seq || t - r.t_echo_ns > max_age_ns ||
                (int)r.payload_len != 4 * act_size) {
                rejected++;
                continue;
            }
            int finite = 1;
            for (int i = 0; i < act_size; i++) finite &= isfinite(get_f32(buf + HEADER + 4 * i));
            if (!finite) {
                rejected++;
                continue;
            }
            for (int i = 0; i < act_size; i++) {
                float a = get_f32(buf + HEADER + 4 * i);
                float c = a > 1.0f ? 1.0f : (a < -1.0f ? -1.0f : a); /* limits from HELLO */
                clipped += c != a;
                command[i] = c;
            }
            if (r.ack_seq == seq) {
                got = 1;
                last_ack = r.ack_seq;
                last_fresh = t;
                rtt[n_rtt++] = t - r.t_echo_ns;
            } else {
                late = 1;
                late_ack = r.ack_seq;
                late_rtt = t - r.t_echo_ns;
            }
        }
        if (!got && late) { /* the deadline passed: the late answer is the newest we have */
            got = 1;
            last_ack = late_ack;
            last_fresh = now_ns();
            rtt[n_rtt++] = late_rtt;
        }
        if (got) {
            fresh++;
        } else if (now_ns() <= hold_deadline) {
            held++; /* hold: keep applying the last command */
        } else {
            fault = 1; /* brake: zero command, latch the fault (re-arm is an operator action) */
            memset(command, 0, (size_t)act_size * sizeof(float));
        }
        for (int i = 0; i < 3 && i < obs_size && i < act_size; i++) state[i] += 0.01f * command[i];
    }
    h.type = BYE;
    h.flags = 0;
    h.seq = ++seq;
    h.t_send_ns = now_ns();
    send_msg(sock, &h, NULL, 0);
    qsort(rtt, (size_t)n_rtt, sizeof(uint64_t), cmp_u64);
    uint64_t p50 = n_rtt ? rtt[n_rtt / 2] : 0, p99 = n_rtt ? rtt[(n_rtt * 99) / 100] : 0;
    uint64_t mx = n_rtt ? rtt[n_rtt - 1] : 0;
    printf("{\"session_id\": %u, \"cycles\": %d, \"fresh\": %d, \"held\": %d, \"rejected\": %d, "
           "\"clipped\": %d, \"deadline_misses\": %d, \"fault\": %s, \"rtt_us\": {\"p50\": %.1f, "
           "\"p99\": %.1f, \"max\": %.1f}}\n",
           session, fresh + held + fault, fresh, held, rejected, clipped, misses,
           fault ? "true" : "false", p50 / 1e3, p99 / 1e3, mx / 1e3);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    free(hello);
    free(state);
    free(command);
    free(rtt);
    free(payload);
    return fault ? 3 : 0;
}
