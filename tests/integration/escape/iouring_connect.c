// SPDX-License-Identifier: MIT
/*
 * iouring_connect ADDR PORT HOST PATH: connect a TCP socket with
 * IORING_OP_CONNECT (raw io_uring syscalls, no liburing), then send one
 * plain HTTP/1.1 GET and print the answer. Output, one of:
 *
 *   setup ERRNO            io_uring_setup/mmap failed (io_uring unavailable)
 *   connect ERRNO          the ring's connect completed with -ERRNO
 *   status N\n<body>       the HTTP answer
 *
 * Exit 0 when a result was printed, 2 on usage errors. alarm(10) bounds it.
 * Built by tests/integration/escape/test_escape_iouring.sh with `cc`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *ename(int e)
{
	switch (e) {
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ENETUNREACH: return "ENETUNREACH";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENOSYS: return "ENOSYS";
	case EINVAL: return "EINVAL";
	default: return strerror(e);
	}
}

int main(int argc, char **argv)
{
	struct io_uring_params p;
	struct sockaddr_storage ss;
	socklen_t slen;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
	char *sq, *cq, req[512], buf[8192];
	int ring, fd, res, n, total = 0;

	if (argc != 5) {
		fprintf(stderr, "usage: %s ADDR PORT HOST PATH\n", argv[0]);
		return 2;
	}
	alarm(10);
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, argv[1], &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons(atoi(argv[2]));
		slen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, argv[1], &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(atoi(argv[2]));
		slen = sizeof(struct sockaddr_in6);
	} else {
		fprintf(stderr, "bad address %s\n", argv[1]);
		return 2;
	}

	memset(&p, 0, sizeof(p));
	ring = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (ring < 0) {
		printf("setup %s\n", ename(errno));
		return 0;
	}
	sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
	cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
		  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
	sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
		printf("setup %s\n", ename(errno));
		return 0;
	}
	sq_tail = (unsigned *)(sq + p.sq_off.tail);
	sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	sq_array = (unsigned *)(sq + p.sq_off.array);
	cq_head = (unsigned *)(cq + p.cq_off.head);
	cq_tail = (unsigned *)(cq + p.cq_off.tail);
	cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		printf("socket %s\n", ename(errno));
		return 0;
	}

	/* One SQE: IORING_OP_CONNECT, addr = sockaddr, off = its length. */
	unsigned tail = *sq_tail, idx = tail & *sq_mask;
	memset(&sqes[idx], 0, sizeof(sqes[idx]));
	sqes[idx].opcode = IORING_OP_CONNECT;
	sqes[idx].fd = fd;
	sqes[idx].addr = (unsigned long)&ss;
	sqes[idx].off = slen;
	sqes[idx].user_data = 42;
	sq_array[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);

	if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
		printf("setup %s\n", ename(errno));
		return 0;
	}
	unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
	if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
		printf("setup no completion\n");
		return 0;
	}
	res = cqes[head & *cq_mask].res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	if (res < 0) {
		printf("connect %s\n", ename(-res));
		return 0;
	}

	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
		     "User-Agent: sluice-escape-iouring\r\n\r\n", argv[4], argv[3]);
	if (write(fd, req, n) != n) {
		printf("write %s\n", ename(errno));
		return 0;
	}
	while (total < (int)sizeof(buf) - 1) {
		n = read(fd, buf + total, sizeof(buf) - 1 - total);
		if (n <= 0)
			break;
		total += n;
	}
	buf[total] = '\0';
	if (strncmp(buf, "HTTP/1.", 7) != 0) {
		printf("read %s\n", total ? "garbage" : "eof");
		return 0;
	}
	char *body = strstr(buf, "\r\n\r\n");
	printf("status %d\n%s\n", atoi(buf + 9), body ? body + 4 : "");
	return 0;
}
