// SPDX-License-Identifier: MIT
/*
 * nft: per-sandbox nftables rules built with libnftnl and sent as one
 * netlink batch per operation (see nft.h for the ruleset).
 *
 * A netlink socket belongs to the netns it was created in, so for a sandbox
 * netns a short-lived thread setns()es there, opens the socket and exits; the
 * daemon's own threads never change namespace here. Every message of a batch
 * asks for an ACK and the batch counts as applied only when every ACK came
 * back clean (the kernel queues all answers before sendmsg returns).
 */
#include "nft.h"

#include "denyset.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#define NFT_HOST_TABLE "sluice"
#define NFT_HOST_BASE_CHAIN "output"
#define NFT_NAME_LEN 96
#define NFT_ID_MAX 64
/* Interval pairs per element message: keeps each message far below the
 * 64 KiB netlink attribute limit. */
#define NFT_INTERVALS_PER_MSG 128
/* Room reserved before each message; no single message we build is larger. */
#define NFT_MSG_RESERVE (64u << 10)
#define NFT_BATCH_MAX (32u << 20)
#define NFT_SOCKBUF (8 << 20)
#define NFT_RECV_TIMEOUT_S 5
#define NFT_MAX_JUMPS 16
/* The kernel gives loopback ifindex 1 in every netns (LOOPBACK_IFINDEX). */
#define NFT_LO_IFINDEX 1u
/* nftables' datatype ids (nft's TYPE_IPADDR, TYPE_IP6ADDR): only used so
 * that `nft list` prints set elements as addresses. */
#define NFT_TYPE_IPADDR 7u
#define NFT_TYPE_IP6ADDR 8u

struct nft_names {
	bool host;
	char table[NFT_NAME_LEN];
	char chain[NFT_NAME_LEN];	/* the chain holding the sandbox's rules */
	char deny4[NFT_NAME_LEN];
	char deny6[NFT_NAME_LEN];
};

struct nft_batch {
	char *buf;
	size_t len, cap;
	uint32_t seq0, seq;
	const char **what;	/* per message (seq - seq0): what it does, for errors */
	size_t nwhat, capwhat;
	unsigned nack;		/* messages that will be answered */
	uint32_t set_id;
	int err;		/* first build error (sticky) */
};

static void nft_seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void nft_seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

static bool nft_id_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;

	if (!n || n > NFT_ID_MAX || !strcmp(id, ".") || !strcmp(id, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = id[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

static int nft_cfg_names(const struct nft_sandbox_cfg *c, struct nft_names *n, char *err,
			 size_t errlen)
{
	if (!c || !nft_id_valid(c->sandbox_id)) {
		nft_seterr(err, errlen, "nft: invalid sandbox id");
		return -EINVAL;
	}
	memset(n, 0, sizeof(*n));
	n->host = !c->netns_path;
	if (n->host) {
		snprintf(n->table, sizeof(n->table), "%s", NFT_HOST_TABLE);
		snprintf(n->chain, sizeof(n->chain), "sb_%s", c->sandbox_id);
		snprintf(n->deny4, sizeof(n->deny4), "deny4_%s", c->sandbox_id);
		snprintf(n->deny6, sizeof(n->deny6), "deny6_%s", c->sandbox_id);
	} else {
		snprintf(n->table, sizeof(n->table), "sluice_%s", c->sandbox_id);
		snprintf(n->chain, sizeof(n->chain), "output");
		snprintf(n->deny4, sizeof(n->deny4), "deny4");
		snprintf(n->deny6, sizeof(n->deny6), "deny6");
	}
	return 0;
}

static int nft_cfg_check(const struct nft_sandbox_cfg *c, const struct nft_names *n, char *err,
			 size_t errlen)
{
	if (c->ntcp > NFT_MAX_PORTS || c->nudp > NFT_MAX_PORTS) {
		nft_seterr(err, errlen, "nft: at most %d listener ports per protocol",
			   NFT_MAX_PORTS);
		return -EINVAL;
	}
	for (unsigned i = 0; i < c->ntcp; i++)
		if (!c->tcp_ports[i])
			goto out_port;
	for (unsigned i = 0; i < c->nudp; i++)
		if (!c->udp_ports[i])
			goto out_port;
	if (!c->deny) {
		nft_seterr(err, errlen, "nft: no deny set");
		return -EINVAL;
	}
	if (n->host && (!c->cgroup_id || !c->cgroup_level)) {
		nft_seterr(err, errlen, "nft: host-netns mode needs the cgroup id and level");
		return -EINVAL;
	}
	return 0;

out_port:
	nft_seterr(err, errlen, "nft: listener port 0");
	return -EINVAL;
}

/* ---- netlink socket ---- */

static int nft_open_here(struct mnl_socket **ret_nl)
{
	struct timeval tv = { .tv_sec = NFT_RECV_TIMEOUT_S };
	int one = 1, sz = NFT_SOCKBUF, fd, ret;
	struct mnl_socket *nl;

	nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		mnl_socket_close(nl);
		return ret;
	}
	fd = mnl_socket_get_fd(nl);
	/* Best effort: answers without the echoed request, room for many. */
	mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, sizeof(one));
	mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	*ret_nl = nl;
	return 0;
}

struct nft_open_job {
	const char *netns_path;
	struct mnl_socket *nl;
	int ret;
};

/* Runs on its own thread, which ends inside the target netns. */
static void *nft_open_thread(void *arg)
{
	struct nft_open_job *job = arg;
	int fd;

	fd = open(job->netns_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		job->ret = -errno;
		return NULL;
	}
	if (setns(fd, CLONE_NEWNET)) {
		job->ret = -errno;
		close(fd);
		return NULL;
	}
	close(fd);
	job->ret = nft_open_here(&job->nl);
	return NULL;
}

/* A netfilter netlink socket in netns_path (NULL: the caller's netns). */
static int nft_open(const char *netns_path, struct mnl_socket **ret_nl)
{
	struct nft_open_job job = { .netns_path = netns_path };
	pthread_t th;
	int ret;

	if (!netns_path)
		return nft_open_here(ret_nl);
	ret = -pthread_create(&th, NULL, nft_open_thread, &job);
	if (ret)
		return ret;
	pthread_join(th, NULL);
	if (job.ret)
		return job.ret;
	*ret_nl = job.nl;
	return 0;
}

/* ---- batch ---- */

static void nft_batch_init(struct nft_batch *b)
{
	memset(b, 0, sizeof(*b));
	b->seq0 = b->seq = (uint32_t)time(NULL);
	b->set_id = 1;
}

static void nft_batch_release(struct nft_batch *b)
{
	free(b->buf);
	free(b->what);
	memset(b, 0, sizeof(*b));
}

/* Room for one more message; records what it does. Returns the tail. */
static char *nft_batch_reserve(struct nft_batch *b, const char *what)
{
	if (b->err)
		return NULL;
	if (b->cap - b->len < NFT_MSG_RESERVE) {
		size_t ncap = b->cap ? b->cap * 2 : 4 * NFT_MSG_RESERVE;
		char *nb;

		if (ncap > NFT_BATCH_MAX) {
			b->err = -E2BIG;
			return NULL;
		}
		nb = realloc(b->buf, ncap);
		if (!nb) {
			b->err = -ENOMEM;
			return NULL;
		}
		memset(nb + b->cap, 0, ncap - b->cap);
		b->buf = nb;
		b->cap = ncap;
	}
	if (b->nwhat == b->capwhat) {
		size_t ncap = b->capwhat ? b->capwhat * 2 : 64;
		const char **nw = realloc(b->what, ncap * sizeof(*nw));

		if (!nw) {
			b->err = -ENOMEM;
			return NULL;
		}
		b->what = nw;
		b->capwhat = ncap;
	}
	b->what[b->nwhat++] = what;
	return b->buf + b->len;
}

static void nft_batch_commit(struct nft_batch *b, struct nlmsghdr *nlh, bool acked)
{
	b->len += NLMSG_ALIGN(nlh->nlmsg_len);
	b->seq++;
	if (acked)
		b->nack++;
}

/* Header of an nf_tables message (family inet, ACK requested), or NULL. */
static struct nlmsghdr *nft_msg(struct nft_batch *b, uint16_t type, uint16_t flags,
				const char *what)
{
	char *p = nft_batch_reserve(b, what);

	if (!p)
		return NULL;
	return nftnl_nlmsg_build_hdr(p, type, NFPROTO_INET, flags | NLM_F_ACK, b->seq);
}

static void nft_batch_begin_end(struct nft_batch *b, bool begin)
{
	char *p = nft_batch_reserve(b, begin ? "batch begin" : "batch end");
	struct nlmsghdr *nlh;

	if (!p)
		return;
	nlh = begin ? nftnl_batch_begin(p, b->seq) : nftnl_batch_end(p, b->seq);
	nft_batch_commit(b, nlh, false);
}

/* Send the batch and wait for every answer; the first error wins. */
static int nft_batch_send(struct mnl_socket *nl, struct nft_batch *b, const char *table,
			  char *err, size_t errlen)
{
	char rbuf[MNL_SOCKET_BUFFER_SIZE * 2];
	int fd = mnl_socket_get_fd(nl), sz;
	unsigned got = 0;
	ssize_t n;

	if (b->err) {
		nft_seterr(err, errlen, "nft %s: building the batch: %s", table,
			   strerror(-b->err));
		return b->err;
	}
	sz = (int)(b->len + 4096);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	n = mnl_socket_sendto(nl, b->buf, b->len);
	if (n < 0) {
		int e = errno;

		nft_seterr(err, errlen, "nft %s: sending the batch: %s", table, strerror(e));
		return -e;
	}
	while (got < b->nack) {
		const struct nlmsghdr *nlh;
		int len;

		n = mnl_socket_recvfrom(nl, rbuf, sizeof(rbuf));
		if (n < 0) {
			int e = (errno == EAGAIN || errno == EWOULDBLOCK) ? ETIMEDOUT : errno;

			nft_seterr(err, errlen, "nft %s: waiting for the kernel's answer: %s",
				   table, strerror(e));
			return -e;
		}
		len = (int)n;
		for (nlh = (const struct nlmsghdr *)rbuf; mnl_nlmsg_ok(nlh, len);
		     nlh = mnl_nlmsg_next(nlh, &len)) {
			const struct nlmsgerr *e;
			uint32_t i = nlh->nlmsg_seq - b->seq0;

			if (nlh->nlmsg_type != NLMSG_ERROR)
				continue;
			e = mnl_nlmsg_get_payload(nlh);
			got++;
			if (e->error) {
				nft_seterr(err, errlen, "nft %s: %s: %s", table,
					   i < b->nwhat ? b->what[i] : "batch", strerror(-e->error));
				return e->error;
			}
		}
	}
	return 0;
}

/* ---- objects ---- */

static void nft_add_table(struct nft_batch *b, const char *name, uint16_t type)
{
	struct nlmsghdr *nlh;
	struct nftnl_table *t;

	nlh = nft_msg(b, type, type == NFT_MSG_NEWTABLE ? NLM_F_CREATE : 0,
		      type == NFT_MSG_NEWTABLE ? "add table" : "delete table");
	if (!nlh)
		return;
	t = nftnl_table_alloc();
	if (!t) {
		b->err = -ENOMEM;
		return;
	}
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, name);
	nftnl_table_nlmsg_build_payload(nlh, t);
	nftnl_table_free(t);
	nft_batch_commit(b, nlh, true);
}

/* base: hook output priority 0 with policy; else a regular chain. */
static void nft_add_chain(struct nft_batch *b, const char *table, const char *name, bool base,
			  int policy)
{
	struct nlmsghdr *nlh;
	struct nftnl_chain *c;

	nlh = nft_msg(b, NFT_MSG_NEWCHAIN, NLM_F_CREATE, "add chain");
	if (!nlh)
		return;
	c = nftnl_chain_alloc();
	if (!c) {
		b->err = -ENOMEM;
		return;
	}
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
	if (base) {
		nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, NF_INET_LOCAL_OUT);
		nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, 0);
		nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, (uint32_t)policy);
		nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "filter");
	}
	nftnl_chain_nlmsg_build_payload(nlh, c);
	nftnl_chain_free(c);
	nft_batch_commit(b, nlh, true);
}

static void nft_del_chain(struct nft_batch *b, const char *table, const char *name)
{
	struct nlmsghdr *nlh;
	struct nftnl_chain *c;

	nlh = nft_msg(b, NFT_MSG_DELCHAIN, 0, "delete chain");
	if (!nlh)
		return;
	c = nftnl_chain_alloc();
	if (!c) {
		b->err = -ENOMEM;
		return;
	}
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
	nftnl_chain_nlmsg_build_payload(nlh, c);
	nftnl_chain_free(c);
	nft_batch_commit(b, nlh, true);
}

/* Delete one rule by handle, or every rule of the chain when handle is 0. */
static void nft_del_rules(struct nft_batch *b, const char *table, const char *chain,
			  uint64_t handle)
{
	struct nlmsghdr *nlh;
	struct nftnl_rule *r;

	nlh = nft_msg(b, NFT_MSG_DELRULE, 0, handle ? "delete jump rule" : "flush chain");
	if (!nlh)
		return;
	r = nftnl_rule_alloc();
	if (!r) {
		b->err = -ENOMEM;
		return;
	}
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
	if (handle)
		nftnl_rule_set_u64(r, NFTNL_RULE_HANDLE, handle);
	nftnl_rule_nlmsg_build_payload(nlh, r);
	nftnl_rule_free(r);
	nft_batch_commit(b, nlh, true);
}

static struct nftnl_set *nft_set_obj(const char *table, const char *name)
{
	struct nftnl_set *s = nftnl_set_alloc();

	if (!s)
		return NULL;
	nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
	nftnl_set_set_str(s, NFTNL_SET_NAME, name);
	return s;
}

/* Create an address interval set; returns the transaction-local set id. */
static uint32_t nft_add_set(struct nft_batch *b, const char *table, const char *name, int family)
{
	struct nlmsghdr *nlh;
	struct nftnl_set *s;
	uint32_t id = b->set_id++;

	nlh = nft_msg(b, NFT_MSG_NEWSET, NLM_F_CREATE, "add set");
	if (!nlh)
		return 0;
	s = nft_set_obj(table, name);
	if (!s) {
		b->err = -ENOMEM;
		return 0;
	}
	nftnl_set_set_u32(s, NFTNL_SET_FAMILY, NFPROTO_INET);
	nftnl_set_set_u32(s, NFTNL_SET_FLAGS, NFT_SET_INTERVAL);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE,
			  family == AF_INET ? NFT_TYPE_IPADDR : NFT_TYPE_IP6ADDR);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, family == AF_INET ? 4 : 16);
	nftnl_set_set_u32(s, NFTNL_SET_ID, id);
	nftnl_set_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	nft_batch_commit(b, nlh, true);
	return id;
}

static void nft_flush_set(struct nft_batch *b, const char *table, const char *name)
{
	struct nlmsghdr *nlh;
	struct nftnl_set *s;

	nlh = nft_msg(b, NFT_MSG_DELSETELEM, 0, "flush set");
	if (!nlh)
		return;
	s = nft_set_obj(table, name);
	if (!s) {
		b->err = -ENOMEM;
		return;
	}
	/* No element list: the kernel empties the set. */
	nftnl_set_elems_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	nft_batch_commit(b, nlh, true);
}

static void nft_del_set(struct nft_batch *b, const char *table, const char *name)
{
	struct nlmsghdr *nlh;
	struct nftnl_set *s;

	nlh = nft_msg(b, NFT_MSG_DELSET, 0, "delete set");
	if (!nlh)
		return;
	s = nft_set_obj(table, name);
	if (!s) {
		b->err = -ENOMEM;
		return;
	}
	nftnl_set_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	nft_batch_commit(b, nlh, true);
}

/* end = start + size of c (big-endian add); false when it wraps past the
 * last address (the interval then has no end element). */
static bool nft_cidr_end(const struct ds_cidr *c, unsigned char *end, unsigned len)
{
	unsigned carry;
	int i;

	memcpy(end, c->addr, len);
	if (!c->prefix)
		return false;
	i = (int)((c->prefix - 1) / 8);
	carry = 0x80u >> ((c->prefix - 1) % 8);
	for (; i >= 0 && carry; i--) {
		unsigned v = end[i] + carry;

		end[i] = (unsigned char)v;
		carry = v >> 8;
	}
	return !carry;
}

static int nft_elem_add(struct nftnl_set *s, const unsigned char *key, unsigned len, bool end)
{
	struct nftnl_set_elem *e = nftnl_set_elem_alloc();

	if (!e)
		return -ENOMEM;
	nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, len);
	if (end)
		nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
	nftnl_set_elem_add(s, e);
	return 0;
}

static void nft_flush_elems(struct nft_batch *b, struct nftnl_set **sp, unsigned *n)
{
	struct nlmsghdr *nlh;

	if (*sp && *n) {
		nlh = nft_msg(b, NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add set elements");
		if (nlh) {
			nftnl_set_elems_nlmsg_build_payload(nlh, *sp);
			nft_batch_commit(b, nlh, true);
		}
	}
	nftnl_set_free(*sp);
	*sp = NULL;
	*n = 0;
}

/* Add the family's deny entries as intervals, adjacent blocks joined. */
static void nft_add_elems(struct nft_batch *b, const char *table, const char *name,
			  const struct denyset *d, int family)
{
	unsigned len = family == AF_INET ? 4 : 16, count = ds_count(d, family), n = 0;
	unsigned char start[16], end[16];
	struct nftnl_set *s = NULL;
	bool open_end = false, have = false;

	for (unsigned i = 0; i <= count && !b->err; i++) {
		const struct ds_cidr *c = i < count ? ds_at(d, family, i) : NULL;
		unsigned char cend[16];
		bool wraps = false;

		if (c) {
			wraps = !nft_cidr_end(c, cend, len);
			if (have && !open_end && !memcmp(end, c->addr, len)) {
				memcpy(end, cend, len);	/* adjacent: extend */
				open_end = wraps;
				continue;
			}
		}
		if (have) {
			if (!s) {
				s = nft_set_obj(table, name);
				if (!s) {
					b->err = -ENOMEM;
					break;
				}
			}
			if (nft_elem_add(s, start, len, false) ||
			    (!open_end && nft_elem_add(s, end, len, true))) {
				b->err = -ENOMEM;
				break;
			}
			if (++n == NFT_INTERVALS_PER_MSG)
				nft_flush_elems(b, &s, &n);
		}
		if (c) {
			memcpy(start, c->addr, len);
			memcpy(end, cend, len);
			open_end = wraps;
			have = true;
		}
	}
	nft_flush_elems(b, &s, &n);
}

/* ---- rules ---- */

struct nft_rb {
	struct nftnl_rule *r;
	int err;
};

static void rb_add(struct nft_rb *rb, struct nftnl_expr *e)
{
	if (!e) {
		rb->err = -ENOMEM;
		return;
	}
	nftnl_rule_add_expr(rb->r, e);
}

static void rb_meta(struct nft_rb *rb, uint32_t key)
{
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
	}
	rb_add(rb, e);
}

static void rb_cmp_eq(struct nft_rb *rb, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("cmp");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
		nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
	}
	rb_add(rb, e);
}

static void rb_payload(struct nft_rb *rb, uint32_t base, uint32_t off, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("payload");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
	}
	rb_add(rb, e);
}

static void rb_nfproto(struct nft_rb *rb, int family)
{
	uint8_t p = family == AF_INET ? NFPROTO_IPV4 : NFPROTO_IPV6;

	rb_meta(rb, NFT_META_NFPROTO);
	rb_cmp_eq(rb, &p, sizeof(p));
}

static void rb_l4proto(struct nft_rb *rb, uint8_t proto)
{
	rb_meta(rb, NFT_META_L4PROTO);
	rb_cmp_eq(rb, &proto, sizeof(proto));
}

static void rb_oif_lo(struct nft_rb *rb)
{
	uint32_t lo = NFT_LO_IFINDEX;

	rb_meta(rb, NFT_META_OIF);
	rb_cmp_eq(rb, &lo, sizeof(lo));
}

/* ip/ip6 saddr or daddr == loopback */
static void rb_addr_loopback(struct nft_rb *rb, int family, bool dst)
{
	static const unsigned char lo4[4] = { 127, 0, 0, 1 };
	static const unsigned char lo6[16] = { [15] = 1 };

	if (family == AF_INET) {
		rb_payload(rb, NFT_PAYLOAD_NETWORK_HEADER, dst ? 16 : 12, 4);
		rb_cmp_eq(rb, lo4, 4);
	} else {
		rb_payload(rb, NFT_PAYLOAD_NETWORK_HEADER, dst ? 24 : 8, 16);
		rb_cmp_eq(rb, lo6, 16);
	}
}

static void rb_port(struct nft_rb *rb, bool dst, uint16_t port)
{
	uint16_t be = htons(port);

	rb_payload(rb, NFT_PAYLOAD_TRANSPORT_HEADER, dst ? 2 : 0, 2);
	rb_cmp_eq(rb, &be, sizeof(be));
}

static void rb_lookup(struct nft_rb *rb, const char *set, uint32_t set_id)
{
	struct nftnl_expr *e = nftnl_expr_alloc("lookup");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
		nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
		if (set_id)
			nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
	}
	rb_add(rb, e);
}

static void rb_counter(struct nft_rb *rb)
{
	rb_add(rb, nftnl_expr_alloc("counter"));
}

static void rb_verdict(struct nft_rb *rb, int verdict, const char *chain)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t)verdict);
		if (chain)
			nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, chain);
	}
	rb_add(rb, e);
}

static void rb_cgroup(struct nft_rb *rb, unsigned level, uint64_t id)
{
	struct nftnl_expr *e = nftnl_expr_alloc("socket");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_SOCKET_KEY, NFT_SOCKET_CGROUPV2);
		nftnl_expr_set_u32(e, NFTNL_EXPR_SOCKET_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_SOCKET_LEVEL, level);
	}
	rb_add(rb, e);
	rb_cmp_eq(rb, &id, sizeof(id));
}

static int rb_start(struct nft_rb *rb, const char *table, const char *chain, const char *comment)
{
	struct nftnl_udata_buf *u;

	rb->err = 0;
	rb->r = nftnl_rule_alloc();
	if (!rb->r)
		return -ENOMEM;
	nftnl_rule_set_str(rb->r, NFTNL_RULE_TABLE, table);
	nftnl_rule_set_str(rb->r, NFTNL_RULE_CHAIN, chain);
	u = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
	if (!u || !nftnl_udata_put_strz(u, NFTNL_UDATA_RULE_COMMENT, comment)) {
		nftnl_udata_buf_free(u);
		nftnl_rule_free(rb->r);
		return -ENOMEM;
	}
	nftnl_rule_set_data(rb->r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u),
			    nftnl_udata_buf_len(u));
	nftnl_udata_buf_free(u);
	return 0;
}

/* Append the built rule to the batch and free it. */
static void rb_emit(struct nft_batch *b, struct nft_rb *rb)
{
	struct nlmsghdr *nlh;

	if (rb->err && !b->err)
		b->err = rb->err;
	nlh = nft_msg(b, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, "add rule");
	if (nlh) {
		nftnl_rule_nlmsg_build_payload(nlh, rb->r);
		nft_batch_commit(b, nlh, true);
	}
	nftnl_rule_free(rb->r);
	rb->r = NULL;
}

/* The sandbox's own rules, in order: listener accepts, deny drops, and in
 * host mode a final drop (the netns chain drops by policy). */
static void nft_add_sandbox_rules(struct nft_batch *b, const struct nft_sandbox_cfg *c,
				  const struct nft_names *n, uint32_t id4, uint32_t id6)
{
	static const int fams[] = { AF_INET, AF_INET6 };
	struct nft_rb rb;

	for (int dir = 0; dir < 2; dir++) {	/* 0: to the listener, 1: its replies */
		for (int f = 0; f < 2; f++) {
			for (unsigned i = 0; i < c->ntcp + c->nudp; i++) {
				bool tcp = i < c->ntcp;
				uint16_t port = tcp ? c->tcp_ports[i] : c->udp_ports[i - c->ntcp];

				if (rb_start(&rb, n->table, n->chain,
					     dir ? "sluice listener reply" : "sluice listener")) {
					b->err = -ENOMEM;
					return;
				}
				rb_oif_lo(&rb);
				rb_nfproto(&rb, fams[f]);
				rb_addr_loopback(&rb, fams[f], dir == 0);
				rb_l4proto(&rb, tcp ? IPPROTO_TCP : IPPROTO_UDP);
				rb_port(&rb, dir == 0, port);
				rb_verdict(&rb, NF_ACCEPT, NULL);
				rb_emit(b, &rb);
			}
		}
	}
	for (int f = 0; f < 2; f++) {
		if (rb_start(&rb, n->table, n->chain, "sluice deny set")) {
			b->err = -ENOMEM;
			return;
		}
		rb_nfproto(&rb, fams[f]);
		rb_payload(&rb, NFT_PAYLOAD_NETWORK_HEADER, fams[f] == AF_INET ? 16 : 24,
			   fams[f] == AF_INET ? 4 : 16);
		rb_lookup(&rb, f ? n->deny6 : n->deny4, f ? id6 : id4);
		rb_counter(&rb);
		rb_verdict(&rb, NF_DROP, NULL);
		rb_emit(b, &rb);
	}
	if (n->host) {
		if (rb_start(&rb, n->table, n->chain, "sluice: nothing else leaves")) {
			b->err = -ENOMEM;
			return;
		}
		rb_counter(&rb);
		rb_verdict(&rb, NF_DROP, NULL);
		rb_emit(b, &rb);
	}
}

/* ---- queries ---- */

/* Send one request (dump or get) and feed every answer to cb. 0, or the
 * kernel's -errno (-ENOENT for a missing object). */
static int nft_query(struct mnl_socket *nl, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	char buf[MNL_SOCKET_BUFFER_SIZE * 2];
	uint32_t seq = nlh->nlmsg_seq, portid = mnl_socket_get_portid(nl);
	ssize_t n;
	int ret;

	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	/* A dump ends with NLMSG_DONE (MNL_CB_STOP); bounded by the
	 * socket's receive timeout per read. */
	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		ret = mnl_cb_run(buf, (size_t)n, seq, portid, cb, data);
		if (ret < 0)
			return -errno;
		if (ret == MNL_CB_STOP || !(nlh->nlmsg_flags & NLM_F_DUMP))
			return 0;
	}
}

static int nft_count_cb(const struct nlmsghdr *nlh, void *data)
{
	(void)nlh;
	(*(unsigned *)data)++;
	return MNL_CB_OK;
}

/* 1 when the table (chain NULL) or the chain exists, 0 when not, -errno. */
static int nft_exists(struct mnl_socket *nl, const char *table, const char *chain)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	uint32_t seq = (uint32_t)time(NULL);
	struct nlmsghdr *nlh;
	unsigned got = 0;
	int ret;

	if (chain) {
		struct nftnl_chain *c = nftnl_chain_alloc();

		if (!c)
			return -ENOMEM;
		nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_INET, 0, seq);
		nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table);
		nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, chain);
		nftnl_chain_nlmsg_build_payload(nlh, c);
		nftnl_chain_free(c);
	} else {
		struct nftnl_table *t = nftnl_table_alloc();

		if (!t)
			return -ENOMEM;
		nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, 0, seq);
		nftnl_table_set_str(t, NFTNL_TABLE_NAME, table);
		nftnl_table_nlmsg_build_payload(nlh, t);
		nftnl_table_free(t);
	}
	ret = nft_query(nl, nlh, nft_count_cb, &got);
	if (ret == -ENOENT)
		return 0;
	if (ret)
		return ret;
	return got > 0;
}

struct nft_rule_scan {
	const char *jump_to;		/* collect handles of rules jumping here */
	uint64_t handles[NFT_MAX_JUMPS];
	unsigned nhandles;
	const char *set4, *set6;	/* sum counters of rules looking these up */
	uint64_t packets;
	int err;
};

static int nft_rule_scan_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nft_rule_scan *sc = data;
	struct nftnl_expr_iter *it;
	struct nftnl_expr *e;
	struct nftnl_rule *r;
	bool jumps = false, looks = false;
	uint64_t pk = 0;

	r = nftnl_rule_alloc();
	if (!r) {
		sc->err = -ENOMEM;
		return MNL_CB_ERROR;
	}
	if (nftnl_rule_nlmsg_parse(nlh, r) < 0) {
		nftnl_rule_free(r);
		return MNL_CB_OK;	/* not ours to judge: skip */
	}
	it = nftnl_expr_iter_create(r);
	while (it && (e = nftnl_expr_iter_next(it))) {
		const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);

		if (!strcmp(name, "immediate") && sc->jump_to &&
		    nftnl_expr_is_set(e, NFTNL_EXPR_IMM_CHAIN) &&
		    !strcmp(nftnl_expr_get_str(e, NFTNL_EXPR_IMM_CHAIN), sc->jump_to))
			jumps = true;
		else if (!strcmp(name, "lookup") && sc->set4 &&
			 (!strcmp(nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET), sc->set4) ||
			  !strcmp(nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET), sc->set6)))
			looks = true;
		else if (!strcmp(name, "counter"))
			pk = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
	}
	nftnl_expr_iter_destroy(it);
	if (jumps) {
		if (sc->nhandles < NFT_MAX_JUMPS)
			sc->handles[sc->nhandles++] = nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE);
		else
			sc->err = -E2BIG;
	}
	if (looks)
		sc->packets += pk;
	nftnl_rule_free(r);
	return MNL_CB_OK;
}

/* Dump the rules of table/chain into sc. A missing table or chain: empty. */
static int nft_scan_rules(struct mnl_socket *nl, const char *table, const char *chain,
			  struct nft_rule_scan *sc)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh;
	struct nftnl_rule *r;
	int ret;

	r = nftnl_rule_alloc();
	if (!r)
		return -ENOMEM;
	nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP,
				    (uint32_t)time(NULL));
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
	nftnl_rule_nlmsg_build_payload(nlh, r);
	nftnl_rule_free(r);
	ret = nft_query(nl, nlh, nft_rule_scan_cb, sc);
	if (ret == -ENOENT)
		ret = 0;
	return ret ? ret : sc->err;
}

/* ---- operations ---- */

int nft_sandbox_apply(const struct nft_sandbox_cfg *c, char *err, size_t errlen)
{
	struct nft_rule_scan sc = { 0 };
	struct mnl_socket *nl;
	struct nft_names n;
	struct nft_batch b;
	uint32_t id4, id6;
	int ret;

	ret = nft_cfg_names(c, &n, err, errlen);
	if (!ret)
		ret = nft_cfg_check(c, &n, err, errlen);
	if (ret)
		return ret;
	ret = nft_open(c->netns_path, &nl);
	if (ret) {
		nft_seterr(err, errlen, "nft %s: netlink socket in %s: %s", n.table,
			   c->netns_path ? c->netns_path : "this netns", strerror(-ret));
		return ret;
	}
	if (n.host) {
		/* Jump rules of an earlier apply, replaced in the same batch. */
		sc.jump_to = n.chain;
		ret = nft_scan_rules(nl, n.table, NFT_HOST_BASE_CHAIN, &sc);
		if (ret) {
			nft_seterr(err, errlen, "nft %s: listing rules: %s", n.table,
				   strerror(-ret));
			goto out_close;
		}
	}

	nft_batch_init(&b);
	nft_batch_begin_end(&b, true);
	nft_add_table(&b, n.table, NFT_MSG_NEWTABLE);
	if (n.host) {
		nft_add_chain(&b, n.table, NFT_HOST_BASE_CHAIN, true, NF_ACCEPT);
		nft_add_chain(&b, n.table, n.chain, false, 0);
		for (unsigned i = 0; i < sc.nhandles; i++)
			nft_del_rules(&b, n.table, NFT_HOST_BASE_CHAIN, sc.handles[i]);
		nft_del_rules(&b, n.table, n.chain, 0);
		id4 = nft_add_set(&b, n.table, n.deny4, AF_INET);
		id6 = nft_add_set(&b, n.table, n.deny6, AF_INET6);
		nft_flush_set(&b, n.table, n.deny4);
		nft_flush_set(&b, n.table, n.deny6);
	} else {
		/* Replace in place: the table and its hooked base chain stay,
		 * rules and elements are swapped inside the transaction.
		 * Deleting and re-adding the table in one batch is not
		 * packet-atomic (on 6.18 a few datagrams got through during
		 * re-applies: tests/unit/nft_test.c reapply_has_no_window). */
		nft_add_chain(&b, n.table, n.chain, true, NF_DROP);
		nft_del_rules(&b, n.table, n.chain, 0);
		id4 = nft_add_set(&b, n.table, n.deny4, AF_INET);
		id6 = nft_add_set(&b, n.table, n.deny6, AF_INET6);
		nft_flush_set(&b, n.table, n.deny4);
		nft_flush_set(&b, n.table, n.deny6);
	}
	nft_add_elems(&b, n.table, n.deny4, c->deny, AF_INET);
	nft_add_elems(&b, n.table, n.deny6, c->deny, AF_INET6);
	nft_add_sandbox_rules(&b, c, &n, id4, id6);
	if (n.host) {
		struct nft_rb rb;
		char comment[NFT_NAME_LEN + 16];

		snprintf(comment, sizeof(comment), "sluice sandbox %s", c->sandbox_id);
		if (rb_start(&rb, n.table, NFT_HOST_BASE_CHAIN, comment)) {
			b.err = -ENOMEM;
		} else {
			rb_cgroup(&rb, c->cgroup_level, c->cgroup_id);
			rb_verdict(&rb, NFT_JUMP, n.chain);
			rb_emit(&b, &rb);
		}
	}
	nft_batch_begin_end(&b, false);
	ret = nft_batch_send(nl, &b, n.table, err, errlen);
	nft_batch_release(&b);
out_close:
	mnl_socket_close(nl);
	return ret;
}

int nft_sandbox_update_deny(const struct nft_sandbox_cfg *c, char *err, size_t errlen)
{
	struct mnl_socket *nl;
	struct nft_names n;
	struct nft_batch b;
	int ret;

	ret = nft_cfg_names(c, &n, err, errlen);
	if (!ret)
		ret = nft_cfg_check(c, &n, err, errlen);
	if (ret)
		return ret;
	ret = nft_open(c->netns_path, &nl);
	if (ret) {
		nft_seterr(err, errlen, "nft %s: netlink socket: %s", n.table, strerror(-ret));
		return ret;
	}
	nft_batch_init(&b);
	nft_batch_begin_end(&b, true);
	nft_flush_set(&b, n.table, n.deny4);
	nft_flush_set(&b, n.table, n.deny6);
	nft_add_elems(&b, n.table, n.deny4, c->deny, AF_INET);
	nft_add_elems(&b, n.table, n.deny6, c->deny, AF_INET6);
	nft_batch_begin_end(&b, false);
	ret = nft_batch_send(nl, &b, n.table, err, errlen);
	nft_batch_release(&b);
	mnl_socket_close(nl);
	return ret;
}

int nft_sandbox_remove(const struct nft_sandbox_cfg *c, char *err, size_t errlen)
{
	struct nft_rule_scan sc = { 0 };
	struct mnl_socket *nl;
	struct nft_names n;
	struct nft_batch b;
	int ret;

	ret = nft_cfg_names(c, &n, err, errlen);
	if (ret)
		return ret;
	ret = nft_open(c->netns_path, &nl);
	if (ret == -ENOENT && c->netns_path)
		return 0;	/* the netns is gone, and its table with it */
	if (ret) {
		nft_seterr(err, errlen, "nft %s: netlink socket: %s", n.table, strerror(-ret));
		return ret;
	}
	ret = nft_exists(nl, n.table, n.host ? n.chain : NULL);
	if (ret <= 0) {
		if (ret)
			nft_seterr(err, errlen, "nft %s: lookup: %s", n.table, strerror(-ret));
		goto out_close;
	}
	if (n.host) {
		sc.jump_to = n.chain;
		ret = nft_scan_rules(nl, n.table, NFT_HOST_BASE_CHAIN, &sc);
		if (ret) {
			nft_seterr(err, errlen, "nft %s: listing rules: %s", n.table,
				   strerror(-ret));
			goto out_close;
		}
	}
	nft_batch_init(&b);
	nft_batch_begin_end(&b, true);
	if (n.host) {
		for (unsigned i = 0; i < sc.nhandles; i++)
			nft_del_rules(&b, n.table, NFT_HOST_BASE_CHAIN, sc.handles[i]);
		nft_del_rules(&b, n.table, n.chain, 0);
		nft_del_chain(&b, n.table, n.chain);
		nft_del_set(&b, n.table, n.deny4);
		nft_del_set(&b, n.table, n.deny6);
	} else {
		nft_add_table(&b, n.table, NFT_MSG_DELTABLE);
	}
	nft_batch_begin_end(&b, false);
	ret = nft_batch_send(nl, &b, n.table, err, errlen);
	nft_batch_release(&b);
out_close:
	mnl_socket_close(nl);
	return ret;
}

bool nft_sandbox_present(const struct nft_sandbox_cfg *c)
{
	struct mnl_socket *nl;
	struct nft_names n;
	int ret;

	if (nft_cfg_names(c, &n, NULL, 0) || nft_open(c->netns_path, &nl))
		return false;
	ret = nft_exists(nl, n.table, n.host ? n.chain : NULL);
	mnl_socket_close(nl);
	return ret > 0;
}

int nft_sandbox_deny_packets(const struct nft_sandbox_cfg *c, uint64_t *ret_packets)
{
	struct nft_rule_scan sc = { 0 };
	struct mnl_socket *nl;
	struct nft_names n;
	int ret;

	ret = nft_cfg_names(c, &n, NULL, 0);
	if (ret)
		return ret;
	ret = nft_open(c->netns_path, &nl);
	if (ret)
		return ret;
	ret = nft_exists(nl, n.table, n.chain);
	if (ret == 0)
		ret = -ENOENT;
	if (ret > 0) {
		sc.set4 = n.deny4;
		sc.set6 = n.deny6;
		ret = nft_scan_rules(nl, n.table, n.chain, &sc);
	}
	mnl_socket_close(nl);
	if (ret)
		return ret;
	*ret_packets = sc.packets;
	return 0;
}
