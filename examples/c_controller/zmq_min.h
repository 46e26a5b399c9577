/* The few libzmq (>= 4.1) C API declarations this example uses, for machines without zmq.h.
 * They are libzmq's stable ABI; with libzmq's own header installed, build with -DUSE_ZMQ_H. */
#ifndef FFEP_ZMQ_MIN_H
#define FFEP_ZMQ_MIN_H
#ifdef USE_ZMQ_H
#include <zmq.h>
#else
#include <stddef.h>
#define ZMQ_DEALER 5
#define ZMQ_LINGER 17
#define ZMQ_SNDHWM 23
#define ZMQ_RCVHWM 24
#define ZMQ_DONTWAIT 1
#define ZMQ_POLLIN 1
typedef struct zmq_pollitem_t {
    void *socket;
    int fd;
    short events;
    short revents;
} zmq_pollitem_t;
void *zmq_ctx_new(void);
int zmq_ctx_term(void *context);
void *zmq_socket(void *context, int type);
int zmq_close(void *socket);
int zmq_setsockopt(void *socket, int option, const void *value, size_t len);
int zmq_connect(void *socket, const char *endpoint);
int zmq_send(void *socket, const void *buf, size_t len, int flags);
int zmq_recv(void *socket, void *buf, size_t len, int flags);
int zmq_poll(zmq_pollitem_t *items, int nitems, long timeout);
int zmq_errno(void);
const char *zmq_strerror(int errnum);
#endif
#endif
