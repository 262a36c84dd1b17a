/* cping: the minimal TCP ping-pong that `make bench-transport` puts next to
 * Fluxon's tcp transport over the same link: one 64-byte message back and
 * forth, TCP_NODELAY, blocking reads and writes, nothing else. With "spin"
 * both ends poll the socket (non-blocking reads in a loop) instead of
 * sleeping in read: the floor for a busy-polling transport, with no wake-up
 * in the round trip.
 *
 *   cping server ADDR PORT [spin]          serve one client, echo until it leaves
 *   cping client ADDR PORT COUNT [spin]    print "p50_ns p99_ns" of COUNT round trips
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define WARMUP 1000

static int spin;

static int full(int fd, char *buf, int n, int wr) {
	int done = 0;
	while (done < n) {
		ssize_t r = wr ? write(fd, buf + done, n - done)
		               : recv(fd, buf + done, n - done, spin ? MSG_DONTWAIT : 0);
		if (r < 0 && !wr && spin && (errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (r <= 0)
			return -1;
		done += (int)r;
	}
	return 0;
}

static int cmp(const void *a, const void *b) {
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

static long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv) {
	if (argc < 4 || (strcmp(argv[1], "server") && strcmp(argv[1], "client")) ||
	    (!strcmp(argv[1], "client") && argc < 5)) {
		fprintf(stderr, "usage: cping server ADDR PORT [spin] | cping client ADDR PORT COUNT [spin]\n");
		return 2;
	}
	spin = !strcmp(argv[argc - 1], "spin");
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(argv[3]));
	if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) {
		fprintf(stderr, "cping: bad address %s\n", argv[2]);
		return 2;
	}
	int one = 1;
	char buf[MSG];
	memset(buf, 'x', sizeof buf);
	if (!strcmp(argv[1], "server")) {
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1)) {
			perror("cping server");
			return 1;
		}
		printf("listening\n");
		fflush(stdout);
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			perror("accept");
			return 1;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		while (full(fd, buf, MSG, 0) == 0 && full(fd, buf, MSG, 1) == 0) {
		}
		close(fd);
		close(ls);
		return 0;
	}
	long count = atol(argv[4]);
	if (count < 1) {
		fprintf(stderr, "cping: COUNT must be at least 1\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
		perror("cping client");
		return 1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	long *rtt = malloc(sizeof(long) * (size_t)count);
	if (!rtt)
		return 1;
	for (long i = 0; i < WARMUP + count; i++) {
		long t0 = now_ns();
		if (full(fd, buf, MSG, 1) || full(fd, buf, MSG, 0)) {
			perror("cping round trip");
			return 1;
		}
		if (i >= WARMUP)
			rtt[i - WARMUP] = now_ns() - t0;
	}
	qsort(rtt, (size_t)count, sizeof(long), cmp);
	printf("%ld %ld\n", rtt[count / 2], rtt[(count * 99) / 100]);
	free(rtt);
	close(fd);
	return 0;
}
