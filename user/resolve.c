// SPDX-License-Identifier: MIT
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "resolve.h"

#define RESOLVE_THREADS 2
#define RESOLVE_QUEUE_MAX 4096

struct host_entry {
	char name[254];
	struct sockaddr_storage addr;
};

struct job {
	struct job *next;
	struct loop *loop;
	char name[256];
	uint16_t port;
	struct resolve_result *res;
	void (*cb)(void *arg);
	void *arg;
};

static struct host_entry *hosts;
static size_t nhosts;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static struct job *q_head, **q_tail = &q_head;
static unsigned q_len;

int resolve_literal(const char *name, uint16_t port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, name, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, name, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return 0;
	}
	return -EINVAL;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static int load_hosts(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int r = 0;

	if (!f) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	while (getline(&line, &cap, f) >= 0) {
		char *save = NULL, *tok, *hash = strchr(line, '#');
		struct sockaddr_storage ss;

		lineno++;
		if (hash)
			*hash = 0;
		tok = strtok_r(line, " \t\r\n", &save);
		if (!tok)
			continue;
		if (resolve_literal(tok, 0, &ss) < 0) {
			snprintf(err, errlen, "%s:%u:1: not an IP address: %s", path, lineno, tok);
			r = -EINVAL;
			break;
		}
		while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
			struct host_entry *n;
			size_t l = strlen(tok);

			if (l > 253) {
				snprintf(err, errlen, "%s:%u: name too long", path, lineno);
				r = -EINVAL;
				goto out;
			}
			if (nhosts >= 65536) {
				snprintf(err, errlen, "%s: more than 65536 names", path);
				r = -E2BIG;
				goto out;
			}
			n = realloc(hosts, (nhosts + 1) * sizeof(*hosts));
			if (!n) {
				r = -ENOMEM;
				goto out;
			}
			hosts = n;
			for (size_t i = 0; i <= l; i++)
				hosts[nhosts].name[i] = (char)tolower((unsigned char)tok[i]);
			if (l && hosts[nhosts].name[l - 1] == '.')
				hosts[nhosts].name[l - 1] = 0;
			hosts[nhosts].addr = ss;
			nhosts++;
		}
	}
out:
	free(line);
	fclose(f);
	return r;
}

static void *worker(void *unused)
{
	(void)unused;
	for (;;) {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
		struct addrinfo *ai = NULL, *p;
		struct job *j;
		int r;

		pthread_mutex_lock(&q_lock);
		while (!q_head)
			pthread_cond_wait(&q_cond, &q_lock);
		j = q_head;
		q_head = j->next;
		if (!q_head)
			q_tail = &q_head;
		q_len--;
		pthread_mutex_unlock(&q_lock);

		j->res->n = 0;
		r = getaddrinfo(j->name, NULL, &hints, &ai);
		if (r != 0) {
			j->res->err = (r == EAI_NONAME || r == EAI_NODATA) ? -ENOENT : -EHOSTUNREACH;
		} else {
			for (p = ai; p && j->res->n < RESOLVE_MAX_ADDRS; p = p->ai_next) {
				if (p->ai_family != AF_INET && p->ai_family != AF_INET6)
					continue;
				memcpy(&j->res->addr[j->res->n], p->ai_addr, p->ai_addrlen);
				set_port(&j->res->addr[j->res->n], j->port);
				j->res->n++;
			}
			j->res->err = j->res->n ? 0 : -ENOENT;
			freeaddrinfo(ai);
		}
		if (loop_post(j->loop, j->cb, j->arg) < 0)
			abort(); /* cannot hand the answer back: nothing sane left */
		free(j);
	}
	return NULL;
}

int resolve_init(const char *hosts_file, char *err, size_t errlen)
{
	pthread_t t;
	int r;

	if (hosts_file) {
		r = load_hosts(hosts_file, err, errlen);
		if (r < 0)
			return r;
	}
	for (int i = 0; i < RESOLVE_THREADS; i++) {
		r = pthread_create(&t, NULL, worker, NULL);
		if (r) {
			snprintf(err, errlen, "resolver thread: %s", strerror(r));
			return -r;
		}
		pthread_detach(t);
	}
	return 0;
}

int resolve_start(struct loop *l, const char *name, uint16_t port, struct resolve_result *res,
		  void (*cb)(void *arg), void *arg)
{
	struct job *j;

	res->err = 0;
	res->n = 0;
	if (resolve_literal(name, port, &res->addr[0]) == 0) {
		res->n = 1;
		return 0;
	}
	for (size_t i = 0; i < nhosts; i++) {
		if (strcasecmp(hosts[i].name, name) == 0 && res->n < RESOLVE_MAX_ADDRS) {
			res->addr[res->n] = hosts[i].addr;
			set_port(&res->addr[res->n], port);
			res->n++;
		}
	}
	if (res->n)
		return 0;
	if (strlen(name) >= sizeof(j->name))
		return -EINVAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->loop = l;
	strcpy(j->name, name);
	j->port = port;
	j->res = res;
	j->cb = cb;
	j->arg = arg;
	pthread_mutex_lock(&q_lock);
	if (q_len >= RESOLVE_QUEUE_MAX) {
		pthread_mutex_unlock(&q_lock);
		free(j);
		return -EAGAIN;
	}
	*q_tail = j;
	q_tail = &j->next;
	q_len++;
	pthread_cond_signal(&q_cond);
	pthread_mutex_unlock(&q_lock);
	return 1;
}
