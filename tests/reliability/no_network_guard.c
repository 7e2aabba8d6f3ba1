/* A process-wide guard for tests: loaded with LD_PRELOAD, it refuses every connection,
 * datagram and name lookup that would leave the machine, and appends one line per attempt
 * to the file named by RISKSCORE_NO_NETWORK_LOG ("<pid> <call> <destination>").
 *
 * It sits under everything in the process: Python's socket module, uvloop (libuv), and any
 * C extension, since all of them end in libc's connect, sendto, sendmsg and getaddrinfo.
 * Allowed: loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104), Unix sockets, netlink, and
 * lookups of localhost and of numeric addresses (which need no resolver).
 *
 * Build: cc -shared -fPIC -O2 -o no_network_guard.so no_network_guard.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void record(const char *call, const char *destination) {
    const char *path = getenv("RISKSCORE_NO_NETWORK_LOG");
    if (path == NULL) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char line[600];
    int n = snprintf(line, sizeof line, "%d %s %s\n", (int)getpid(), call, destination);
    if (n > 0) {
        ssize_t ignored = write(fd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
        (void)ignored;
    }
    close(fd);
}

/* 1 when the address stays on this machine; otherwise 0, with it written to out. */
static int local_address(const struct sockaddr *sa, char *out, size_t size) {
    if (sa == NULL) return 1;
    switch (sa->sa_family) {
    case AF_UNSPEC:  /* connect(AF_UNSPEC) dissolves a datagram socket's association */
    case AF_UNIX:
    case AF_NETLINK:
        return 1;
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)size);
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)size);
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return 1;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    default:
        snprintf(out, size, "address family %d", sa->sa_family);
        return 0;
    }
}

int connect(int fd, const struct sockaddr *sa, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (real == NULL) real = dlsym(RTLD_NEXT, "connect");
    char where[128] = "";
    if (!local_address(sa, where, sizeof where)) {
        record("connect", where);
        errno = ECONNREFUSED;
        return -1;
    }
    return real(fd, sa, len);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa,
               socklen_t len) {
    static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    if (real == NULL) real = dlsym(RTLD_NEXT, "sendto");
    char where[128] = "";
    if (!local_address(sa, where, sizeof where)) {
        record("sendto", where);
        errno = ENETUNREACH;
        return -1;
    }
    return real(fd, buf, n, flags, sa, len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    static ssize_t (*real)(int, const struct msghdr *, int);
    if (real == NULL) real = dlsym(RTLD_NEXT, "sendmsg");
    char where[128] = "";
    if (msg != NULL && !local_address(msg->msg_name, where, sizeof where)) {
        record("sendmsg", where);
        errno = ENETUNREACH;
        return -1;
    }
    return real(fd, msg, flags);
}

static int local_name(const char *node) {
    unsigned char buf[sizeof(struct in6_addr)];
    if (node == NULL) return 1;
    if (inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1) return 1;
    return strcasecmp(node, "localhost") == 0 || strcasecmp(node, "localhost.") == 0 ||
           strcasecmp(node, "ip6-localhost") == 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    if (real == NULL) real = dlsym(RTLD_NEXT, "getaddrinfo");
    if (!local_name(node)) {
        record("getaddrinfo", node);
        return EAI_NONAME;
    }
    return real(node, service, hints, res);
}
