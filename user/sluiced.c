// SPDX-License-Identifier: MIT
/*
 * sluiced: the sluice daemon. Loads the BPF programs (bpf_loader), owns the
 * CA (tls), runs the worker loops (proxy), opens a listener inside every
 * attached sandbox's network namespace (sandbox) and answers sluicectl on the
 * management API (mgmt: HTTP + JSON on a Unix socket). Runs in the
 * foreground; logs to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "audit.h"
#include "bpf_loader.h"
#include "cpsync.h"
#include "mgmt.h"
#include "netaddr.h"
#include "denyset.h"
#include "nft.h"
#include "log.h"
#include "policy.h"
#include "proxy.h"
#include "rewrite.h"
#include "resolve.h"
#include "sandbox.h"
#include "tls.h"

#define SLUICE_VERSION "0.1.0"
#define MAX_SANDBOXES 4096

struct sandbox_info {
	char id[SB_ID_MAX + 1];
	char cgroup[PATH_MAX];
	char netns[PATH_MAX];
	char policy[PATH_MAX];  /* "" = the default policy */
	char policy_hash[80];
	unsigned generation;    /* policy generations applied (1 at attach) */
	time_t last_reload;
	char last_error[300];
	/* managed mode */
	char applied_hash[80];  /* "" until the first config is applied */
	char principal[257];
	char cp_status[16];
	time_t last_sync;
	uint64_t cgroup_id;
	bool used;
};

struct daemon {
	const char *state_dir, *run_dir, *pin_dir, *hosts, *upstream_ca, *ca_cert, *ca_key;
	const char *self_cgroup;
	const char *audit_path, *default_policy;
	size_t audit_queue;
	unsigned drain_s;
	struct audit *audit;
	char sock_path[PATH_MAX];
	uint16_t port, dns_port, udp_port;
	const char *dns_resolver;
	char cgroot[PATH_MAX];
	unsigned workers;
	unsigned cert_cache;
	struct proxy_cfg pcfg;
	struct tls *tls;
	struct bpfl *bpfl;
	struct proxy *proxy;
	struct mgmt *mgmt;
	int mgmt_gid;
	/* managed mode */
	const char *cp_url, *cp_token_file, *cp_ca, *cp_cert, *cp_key, *node;
	char *cp_token;
	unsigned cp_interval_ms;
	struct cps *cps;
	char cp_last_error[300];
	time_t cp_last_sync;
	pthread_mutex_t lock;           /* sandboxes[] and host listener */
	struct sandbox_info sandboxes[MAX_SANDBOXES];
	bool host_listening;
	time_t started;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluiced [options]\n"
		"\n"
		"The sluice daemon: intercepts every TCP connection of attached sandboxes,\n"
		"terminates TLS with its own CA and relays HTTP/1.1 to the real upstream.\n"
		"Runs in the foreground and logs to stderr. Needs root (CAP_BPF,\n"
		"CAP_NET_ADMIN, CAP_SYS_ADMIN).\n"
		"\n"
		"  --state-dir DIR       CA certificate and key (default /var/lib/sluice)\n"
		"  --run-dir DIR         control socket, sandbox records, netns pins\n"
		"                        (default /run/sluice)\n"
		"  --bpf-pin-dir DIR     bpffs pins of maps and links (default /sys/fs/bpf/sluice)\n"
		"  --port N              listener port inside each sandbox (default 15001)\n"
		"  --dns-port N          DNS listener port inside each sandbox (default 15053;\n"
		"                        0: no DNS, the sandbox's DNS is refused)\n"
		"  --dns-resolver A[:P]  where sandbox DNS is forwarded (default: the first\n"
		"                        nameserver of /etc/resolv.conf)\n"
		"  --udp-port N          UDP relay port inside each sandbox, for the UDP\n"
		"                        destinations a policy allows (network.udp; default\n"
		"                        15054; 0: no relay, all non-DNS UDP is refused)\n"
		"  --udp-idle-timeout-ms N  a relayed UDP flow closes after N ms without a\n"
		"                        datagram either way (default 60000, min 100)\n"
		"  --workers N           event loop threads (default: number of CPUs)\n"
		"  --ca-cert FILE        use this CA certificate (PEM) instead of generating one\n"
		"  --ca-key FILE         its private key (PEM, mode 0600)\n"
		"  --upstream-ca FILE    PEM bundle to verify upstream servers (default: system)\n"
		"  --hosts FILE          /etc/hosts-format overrides for upstream name lookups\n"
		"  --cgroup PATH         cgroup sluiced moves itself into (default\n"
		"                        <cgroup2 root>/sluiced); never inside a sandbox\n"
		"  --cert-cache N        leaf certificates kept (default 1024)\n"
		"  --max-conns N         open client connections, all sandboxes (default 16384)\n"
		"  --connect-timeout S   upstream connect + TLS timeout (default 10)\n"
		"  --audit-log FILE      JSON audit log, one line per request (default\n"
		"                        /var/log/sluice/audit.jsonl; 0600, reopened on SIGHUP)\n"
		"  --audit-queue BYTES   audit queue before traffic waits (default 1048576)\n"
		"  --drain-timeout S     on SIGTERM, let open requests finish this long (default 10)\n"
		"  --mgmt-group GID      group allowed on the management socket besides root\n"
		"  --control-plane URL   managed mode: policies, principals and secrets come from\n"
		"                        this control plane (docs/control-plane.md); sandboxes\n"
		"                        answer 503 not_synced until their first config\n"
		"  --control-plane-token-file F  bearer token (else SLUICE_CONTROL_PLANE_TOKEN)\n"
		"  --control-plane-ca F  PEM bundle to verify the control plane (default: system)\n"
		"  --control-plane-cert F  client certificate (PEM) for a control plane that\n"
		"                        requires one (mTLS); with --control-plane-key\n"
		"  --control-plane-key F  its private key (PEM, unencrypted, mode 0600)\n"
		"  --node-name NAME      this node's name for the control plane (default: hostname)\n"
		"  --sync-interval MS    poll interval, with jitter and backoff (default 5000)\n"
		"\n"
		"Management API: HTTP + JSON on RUN_DIR/sluiced.sock (docs/management-api.md);\n"
		"SLUICE_MANAGEMENT_LISTEN=ADDR:PORT with SLUICE_MANAGEMENT_TOKEN adds a TCP\n"
		"listener that requires that bearer token.\n"
		"  --default-policy FILE policy for sandboxes attached without one (default: the\n"
		"                        built-in allow-all policy: any host, no secrets)\n"
		"\n"
		"Per-sandbox limits (head size, body buffer, connections, timeouts) come from\n"
		"the sandbox's policy: see docs/policy.md. SIGHUP recompiles every policy and\n"
		"reopens the audit log.\n"
		"  --log-level LEVEL     error|warn|info|debug (default info)\n"
		"  --version, --help\n");
}

/* Long options without a short letter. */
enum { OPT_UDP_PORT = 1000, OPT_UDP_IDLE, OPT_CP_CERT, OPT_CP_KEY };

static long parse_num(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max) {
		fprintf(stderr, "sluiced: %s: expected a number in [%ld, %ld], got '%s'\n", opt, min,
			max, s);
		exit(2);
	}
	return v;
}

/* ---- sandboxes ---- */

static struct sandbox_info *sb_find(struct daemon *d, const char *id)
{
	for (unsigned i = 0; i < MAX_SANDBOXES; i++)
		if (d->sandboxes[i].used && strcmp(d->sandboxes[i].id, id) == 0)
			return &d->sandboxes[i];
	return NULL;
}

static int open_listeners(struct daemon *d, const char *netns, const char *owner, char *err,
			  size_t errlen)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(d->port) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(d->port),
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd4, fd6, r;

	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd4 = sb_listen_in_netns(netns, (struct sockaddr *)&a4, sizeof(a4), 4096);
	if (fd4 < 0) {
		snprintf(err, errlen, "listen on 127.0.0.1:%u in %s: %s", d->port,
			 netns ? netns : "the host netns", strerror(-fd4));
		return fd4;
	}
	r = proxy_listener_add(d->proxy, fd4, PROXY_L_HTTP, owner);
	if (r < 0) {
		close(fd4);
		snprintf(err, errlen, "listener: %s", strerror(-r));
		return r;
	}
	if (d->dns_port) {
		struct sockaddr_in d4 = a4;
		struct sockaddr_in6 d6 = a6;
		int types[2] = { SOCK_DGRAM, SOCK_STREAM };

		d4.sin_port = htons(d->dns_port);
		d6.sin6_port = htons(d->dns_port);
		for (int t = 0; t < 2; t++) {
			int kind = types[t] == SOCK_DGRAM ? PROXY_L_DNS_UDP : PROXY_L_DNS_TCP;
			int f4 = sb_socket_in_netns(netns, (struct sockaddr *)&d4, sizeof(d4), types[t],
						    1024);
			int f6 = sb_socket_in_netns(netns, (struct sockaddr *)&d6, sizeof(d6), types[t],
						    1024);

			if (f4 < 0) {
				snprintf(err, errlen, "DNS listener 127.0.0.1:%u in %s: %s", d->dns_port,
					 netns ? netns : "the host netns", strerror(-f4));
				if (f6 >= 0)
					close(f6);
				return f4;
			}
			if (proxy_listener_add(d->proxy, f4, kind, owner) < 0)
				close(f4);
			if (f6 >= 0 && proxy_listener_add(d->proxy, f6, kind, owner) < 0)
				close(f6);
		}
	}
	if (d->udp_port) {
		struct sockaddr_in u4 = a4;
		struct sockaddr_in6 u6 = a6;
		int f4, f6;

		u4.sin_port = htons(d->udp_port);
		u6.sin6_port = htons(d->udp_port);
		f4 = sb_socket_in_netns(netns, (struct sockaddr *)&u4, sizeof(u4), SOCK_DGRAM, 0);
		if (f4 < 0) {
			snprintf(err, errlen, "UDP relay 127.0.0.1:%u in %s: %s", d->udp_port,
				 netns ? netns : "the host netns", strerror(-f4));
			return f4;
		}
		if (proxy_listener_add(d->proxy, f4, PROXY_L_UDP_RELAY, owner) < 0)
			close(f4);
		f6 = sb_socket_in_netns(netns, (struct sockaddr *)&u6, sizeof(u6), SOCK_DGRAM, 0);
		if (f6 >= 0 && proxy_listener_add(d->proxy, f6, PROXY_L_UDP_RELAY, owner) < 0)
			close(f6);
	}
	fd6 = sb_listen_in_netns(netns, (struct sockaddr *)&a6, sizeof(a6), 4096);
	if (fd6 < 0) {
		/* No IPv6 in that netns: v6 connects then fail (closed port), never bypass. */
		log_warn("sandbox=%s: no [::1]:%u listener (%s); IPv6 connects will fail", owner,
			 d->port, strerror(-fd6));
		return 0;
	}
	r = proxy_listener_add(d->proxy, fd6, PROXY_L_HTTP, owner);
	if (r < 0)
		close(fd6);
	return 0;
}

static void ds_from_pol(struct ds_cidr *d, const struct cidr *c, const char *reason)
{
	d->family = c->family;
	memcpy(d->addr, c->addr, sizeof(d->addr));
	d->prefix = c->prefix;
	d->reason = reason;
}

/* The sandbox deny set: built-in entries, the policy's additions and allowed
 * private ranges, and this host's own addresses. */
static int build_deny(struct pol *pol, struct rw_gen *gen, char *err, size_t errlen)
{
	unsigned na = pol_net_deny_count(pol), nr = pol_net_allow_count(pol);
	struct ds_cidr *add = calloc(na + 1, sizeof(*add)), *rem = calloc(nr + 1, sizeof(*rem));
	struct ds_opts o = { .add = add, .nadd = na, .remove = rem, .nremove = nr,
			     .include_host_addrs = true };
	struct denyset *ds = NULL;
	char why[400];
	int r = -ENOMEM;

	if (!add || !rem)
		goto out;
	for (unsigned i = 0; i < na; i++)
		ds_from_pol(&add[i], pol_net_deny_at(pol, i), "policy network.deny");
	for (unsigned i = 0; i < nr; i++)
		ds_from_pol(&rem[i], pol_net_allow_at(pol, i), "policy network.allow");
	r = ds_build(&o, &ds, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "%s: network: %s", pol_source(pol), why);
		goto out;
	}
	rw_gen_set_deny(gen, ds);
out:
	free(add);
	free(rem);
	return r;
}

/* A deny set entry without its reason. */
static struct cidr cidr_of_ds(const struct ds_cidr *e)
{
	struct cidr c = { .family = e->family, .prefix = e->prefix };

	memcpy(c.addr, e->addr, sizeof(c.addr));
	return c;
}

/* The deny set as BPF LPM entries for bpfl_set_deny (caller frees). */
static struct cidr *deny_entries(const struct denyset *ds, unsigned *ret_n)
{
	unsigned n4 = ds_count(ds, AF_INET), n6 = ds_count(ds, AF_INET6), k = 0;
	struct cidr *v = calloc(n4 + n6 + 1, sizeof(*v));

	if (!v)
		return NULL;
	for (int f = 0; f < 2; f++) {
		int fam = f ? AF_INET6 : AF_INET;

		for (unsigned i = 0; i < ds_count(ds, fam); i++)
			v[k++] = cidr_of_ds(ds_at(ds, fam, i));
	}
	*ret_n = k;
	return v;
}

static int range_cmp(const void *a, const void *b)
{
	const struct pol_port_range *x = a, *y = b;

	return x->lo != y->lo ? (x->lo < y->lo ? -1 : 1) : (x->hi < y->hi ? -1 : x->hi > y->hi);
}

/*
 * network.udp as UDP allow trie entries: one per distinct CIDR, carrying the
 * ports of every rule whose CIDR covers it (an LPM lookup sees only the
 * longest match), sorted and merged. More than SLUICE_UDP_RANGES_MAX ranges
 * at one CIDR is an error. *ret is the caller's to free (also when n is 0).
 */
static int udp_allow_entries(const struct pol *pol, struct bpfl_udp_allow **ret, unsigned *ret_n,
			     char *err, size_t errlen)
{
	unsigned nr = pol_net_udp_count(pol), n = 0;
	struct bpfl_udp_allow *v = calloc(nr + 1, sizeof(*v));
	struct pol_port_range *acc = calloc((size_t)nr * POL_UDP_PORTS_MAX + 1, sizeof(*acc));

	if (!v || !acc) {
		free(v);
		free(acc);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < nr; i++) {
		struct cidr c = cidr_unmap(&pol_net_udp_at(pol, i)->to);
		unsigned na = 0, k;

		for (k = 0; k < n; k++)
			if (cidr_covers(&v[k].cidr, &c) && cidr_covers(&c, &v[k].cidr))
				break;
		if (k < n)
			continue; /* already made for an equal CIDR */
		for (unsigned j = 0; j < nr; j++) {
			const struct pol_udp_rule *rj = pol_net_udp_at(pol, j);
			struct cidr cj = cidr_unmap(&rj->to);

			if (!cidr_covers(&cj, &c))
				continue;
			memcpy(acc + na, rj->ports, rj->nports * sizeof(*acc));
			na += rj->nports;
		}
		qsort(acc, na, sizeof(*acc), range_cmp);
		v[n].cidr = c;
		for (k = 0; k < na; k++) {
			unsigned m = v[n].nranges;

			if (m && acc[k].lo <= (unsigned)v[n].ranges[m - 1].hi + 1) {
				if (acc[k].hi > v[n].ranges[m - 1].hi)
					v[n].ranges[m - 1].hi = acc[k].hi;
				continue;
			}
			if (m == SLUICE_UDP_RANGES_MAX) {
				char buf[INET6_ADDRSTRLEN];

				inet_ntop(c.family, c.addr, buf, sizeof(buf));
				snprintf(err, errlen,
					 "%s: network.udp: more than %d separate port ranges apply to "
					 "%s/%u (rules covering it add up)",
					 pol_source(pol), SLUICE_UDP_RANGES_MAX, buf, c.prefix);
				free(v);
				free(acc);
				return -EINVAL;
			}
			v[n].ranges[m].lo = acc[k].lo;
			v[n].ranges[m].hi = acc[k].hi;
			v[n].nranges = m + 1;
		}
		n++;
	}
	free(acc);
	*ret = v;
	*ret_n = n;
	return 0;
}

/*
 * A network.udp rule wholly inside one deny set entry could never be
 * reached (the deny set wins): refuse the policy and say what to change.
 */
static int udp_rules_reachable(const struct pol *pol, const struct denyset *ds, char *err,
			       size_t errlen)
{
	for (unsigned i = 0; i < pol_net_udp_count(pol); i++) {
		const struct pol_udp_rule *rule = pol_net_udp_at(pol, i);
		struct cidr c = cidr_unmap(&rule->to);

		for (unsigned k = 0; k < ds_count(ds, c.family); k++) {
			const struct ds_cidr *e = ds_at(ds, c.family, k);
			struct cidr ec = cidr_of_ds(e);
			char a[INET6_ADDRSTRLEN], b[64];

			if (!cidr_covers(&ec, &c))
				continue;
			inet_ntop(c.family, c.addr, a, sizeof(a));
			snprintf(err, errlen,
				 "%s: network.udp rule '%s' (to %s/%u) lies inside the deny set entry "
				 "%s (%s) and could never be reached; a private range must also be "
				 "listed in network.allow",
				 pol_source(pol), rule->name, a, c.prefix,
				 ds_cidr_str(e, b, sizeof(b)), e->reason ? e->reason : "denied");
			return -EINVAL;
		}
	}
	return 0;
}

static void nft_cfg_for(struct daemon *d, const struct sandbox_info *si, const struct rw_gen *gen,
			struct nft_sandbox_cfg *c)
{
	unsigned level = 0;
	const char *rel = si->cgroup + strlen(d->cgroot);

	memset(c, 0, sizeof(*c));
	c->netns_path = si->netns[0] ? si->netns : NULL;
	c->cgroup_id = si->cgroup_id;
	for (const char *q = rel; *q; q++)
		level += *q == '/' && q[1] && q[1] != '/';
	c->cgroup_level = level ? level : 1;
	c->sandbox_id = si->id;
	c->tcp_ports[c->ntcp++] = d->port;
	if (d->dns_port) {
		c->tcp_ports[c->ntcp++] = d->dns_port;
		c->udp_ports[c->nudp++] = d->dns_port;
	}
	if (d->udp_port)
		c->udp_ports[c->nudp++] = d->udp_port;
	c->deny = gen ? rw_gen_deny(gen) : NULL;
}

/* Kernel enforcement of the deny set: BPF tries and nftables, in that
 * order (BPF refuses with an errno before any packet exists); and the UDP
 * destinations network.udp allows (BPF only: they go to the relay). */
static int enforce_deny(struct daemon *d, struct sandbox_info *si, const struct rw_gen *gen,
			bool update, char *err, size_t errlen)
{
	struct nft_sandbox_cfg nc;
	struct cidr *v;
	unsigned n = 0;
	int r;

	v = deny_entries(rw_gen_deny(gen), &n);
	if (!v) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = bpfl_set_deny(d->bpfl, si->cgroup_id, v, n);
	free(v);
	if (r < 0) {
		snprintf(err, errlen, "BPF deny set: %s", strerror(-r));
		return r;
	}
	{
		struct bpfl_udp_allow *ua = NULL;

		r = udp_allow_entries(rw_gen_pol(gen), &ua, &n, err, errlen);
		if (r == 0) {
			r = bpfl_set_udp_allow(d->bpfl, si->cgroup_id, ua, n);
			if (r < 0)
				snprintf(err, errlen, "BPF UDP allow set: %s", strerror(-r));
		}
		free(ua);
		if (r < 0)
			return r;
	}
	nft_cfg_for(d, si, gen, &nc);
	r = update ? nft_sandbox_update_deny(&nc, err, errlen) : nft_sandbox_apply(&nc, err, errlen);
	if (r == -ENOENT && update)
		r = nft_sandbox_apply(&nc, err, errlen);
	return r;
}

/* Compile the policy at path (NULL/"": the default) into a generation. */
static int load_gen(struct daemon *d, const char *path, struct rw_gen **ret_gen, char *err,
		    size_t errlen);

/* Generation for a compiled policy: deny set and trust store (takes pol). */
static int gen_from_pol(struct daemon *d, struct pol *pol, struct rw_gen **ret_gen, char *err,
			size_t errlen);

static int load_gen(struct daemon *d, const char *path, struct rw_gen **ret_gen, char *err,
		    size_t errlen)
{
	struct pol_error pe = { 0 };
	struct pol *pol;
	int r;

	if (!path || !path[0])
		path = d->default_policy;
	if (!path) {
		pol = pol_allow_all();
		if (!pol) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
	} else {
		r = pol_load_file(path, &pol, &pe);
		if (r < 0) {
			if (pe.msg[0])
				snprintf(err, errlen, "%s:%u:%u: %s", pe.file[0] ? pe.file : path,
					 pe.line, pe.col, pe.msg);
			else
				snprintf(err, errlen, "%s: %s", path, strerror(-r));
			return r;
		}
		for (unsigned i = 0; i < pol_nwarnings(pol); i++) {
			const struct pol_error *w = pol_warning(pol, i);

			log_warn("%s:%u:%u: warning: %s", w->file, w->line, w->col, w->msg);
		}
	}
	return gen_from_pol(d, pol, ret_gen, err, errlen);
}

static int gen_from_pol(struct daemon *d, struct pol *pol, struct rw_gen **ret_gen, char *err,
			size_t errlen)
{
	int r = rw_gen_new(pol, ret_gen);

	if (r < 0) {
		snprintf(err, errlen, "%s: %s", pol_source(pol),
			 r == -E2BIG ? "more than 64 secrets" : strerror(-r));
		pol_unref(pol);
		return r;
	}
	r = build_deny(pol, *ret_gen, err, errlen);
	if (r == 0)
		r = udp_rules_reachable(pol, rw_gen_deny(*ret_gen), err, errlen);
	if (r == 0) {
		struct bpfl_udp_allow *ua = NULL;
		unsigned n;

		r = udp_allow_entries(pol, &ua, &n, err, errlen);
		free(ua);
	}
	if (r == 0 && pol_net_udp_count(pol) && !d->udp_port)
		log_warn("%s: network.udp has %u rule(s) but sluiced runs with --udp-port 0: those "
			 "destinations are refused", pol_source(pol), pol_net_udp_count(pol));
	if (r == 0 && pol_upstream_ca(pol)) {
		struct tls_client *tc;

		r = tls_client_ctx_new(d->tls, pol_upstream_ca(pol), &tc, err, errlen);
		if (r == 0)
			rw_gen_set_upstream_tls(*ret_gen, tc, tls_client_ctx_free);
	}
	pol_unref(pol);
	if (r < 0) {
		rw_gen_unref(*ret_gen);
		*ret_gen = NULL;
	}
	return r;
}

static int do_attach(struct daemon *d, const char *id, const char *cgroup, const char *netns,
		     const char *policy, bool persist, char *err, size_t errlen)
{
	struct rw_gen *gen = NULL;
	struct sandbox_info *si = NULL;
	struct sb_record rec;
	uint64_t cgid;
	int r;

	if (!sb_id_valid(id)) {
		snprintf(err, errlen, "invalid sandbox id '%s' (want [A-Za-z0-9_.-]{1,64})", id);
		return -EINVAL;
	}
	if (!sb_is_cgroup2_dir(cgroup)) {
		snprintf(err, errlen, "%s is not a cgroup v2 directory", cgroup);
		return -EINVAL;
	}
	if (netns && access(netns, R_OK) < 0) {
		snprintf(err, errlen, "netns %s: %s", netns, strerror(errno));
		return -errno;
	}
	cgid = bpfl_cgroup_id(cgroup);
	if (!cgid) {
		snprintf(err, errlen, "cannot read the cgroup id of %s", cgroup);
		return -EINVAL;
	}
	if (d->cp_url) {
		/* managed: nothing is served until the control plane's first config
		 * for this sandbox is applied (503 not_synced) */
		r = load_gen(d, NULL, &gen, err, errlen);
		if (r == 0)
			rw_gen_set_principal(gen, "", RW_PENDING);
	} else {
		r = load_gen(d, policy, &gen, err, errlen);
	}
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->lock);
	if (sb_find(d, id)) {
		pthread_mutex_unlock(&d->lock);
		rw_gen_unref(gen);
		snprintf(err, errlen, "sandbox '%s' is already attached", id);
		return -EEXIST;
	}
	for (unsigned i = 0; i < MAX_SANDBOXES; i++) {
		if (d->sandboxes[i].used)
			continue;
		if (d->sandboxes[i].cgroup_id == 0) {
			si = &d->sandboxes[i];
			break;
		}
		si = si ? si : &d->sandboxes[i];
	}
	for (unsigned i = 0; i < MAX_SANDBOXES; i++) {
		if (d->sandboxes[i].used && d->sandboxes[i].cgroup_id == cgid) {
			pthread_mutex_unlock(&d->lock);
			rw_gen_unref(gen);
			snprintf(err, errlen, "cgroup %s is already attached as '%s'", cgroup,
				 d->sandboxes[i].id);
			return -EEXIST;
		}
	}
	if (!si) {
		pthread_mutex_unlock(&d->lock);
		rw_gen_unref(gen);
		snprintf(err, errlen, "too many sandboxes (limit %d)", MAX_SANDBOXES);
		return -ENOSPC;
	}
	memset(si, 0, sizeof(*si));
	snprintf(si->id, sizeof(si->id), "%s", id);
	snprintf(si->cgroup, sizeof(si->cgroup), "%s", cgroup);
	snprintf(si->netns, sizeof(si->netns), "%s", netns ? netns : "");
	snprintf(si->policy, sizeof(si->policy), "%s", policy ? policy : "");
	snprintf(si->policy_hash, sizeof(si->policy_hash), "%s", pol_hash(rw_gen_pol(gen)));
	si->generation = 1;
	si->last_reload = time(NULL);
	si->cgroup_id = cgid;
	si->used = true;

	r = proxy_sandbox_add(d->proxy, id, cgid, cgroup, gen);
	if (r < 0) {
		snprintf(err, errlen, "register sandbox: %s", strerror(-r));
		goto out_unuse;
	}
	if (netns) {
		r = open_listeners(d, netns, id, err, errlen);
		if (r < 0)
			goto out_unregister;
	} else if (!d->host_listening) {
		r = open_listeners(d, NULL, "@host", err, errlen);
		if (r < 0)
			goto out_unregister;
		d->host_listening = true;
	}
	/* Deny set first: from the moment the programs are attached, denied
	 * destinations are refused (the tries are keyed by cgroup id); the
	 * registration makes the cgroup's descendants this sandbox's too. */
	r = enforce_deny(d, si, gen, false, err, errlen);
	if (r < 0)
		goto out_deny;
	r = bpfl_sandbox_register(d->bpfl, cgid, true);
	if (r < 0) {
		snprintf(err, errlen, "register the sandbox cgroup with BPF: %s", strerror(-r));
		goto out_deny;
	}
	r = bpfl_attach_cgroup(d->bpfl, id, cgroup);
	if (r < 0) {
		snprintf(err, errlen, "attach BPF programs to %s: %s", cgroup,
			 r == -ELOOP ? "it contains sluiced itself" : strerror(-r));
		goto out_deny;
	}
	if (persist) {
		memset(&rec, 0, sizeof(rec));
		snprintf(rec.id, sizeof(rec.id), "%s", id);
		snprintf(rec.cgroup, sizeof(rec.cgroup), "%s", cgroup);
		snprintf(rec.netns, sizeof(rec.netns), "%s", netns ? netns : "");
		snprintf(rec.policy, sizeof(rec.policy), "%s", policy ? policy : "");
		r = sb_record_save(d->run_dir, &rec);
		if (r < 0)
			log_warn("sandbox=%s: cannot save its record (%s): a restarted sluiced will "
				 "not reopen its listener", id, strerror(-r));
	}
	pthread_mutex_unlock(&d->lock);
	log_info("sandbox=%s attached: cgroup %s (id %llu), netns %s, policy %s (%s)", id, cgroup,
		 (unsigned long long)cgid, netns ? netns : "host", pol_source(rw_gen_pol(gen)),
		 pol_hash(rw_gen_pol(gen)));
	rw_gen_unref(gen);
	return 0;

out_deny:
	bpfl_sandbox_register(d->bpfl, cgid, false);
	bpfl_clear_deny(d->bpfl, cgid);
	bpfl_clear_udp_allow(d->bpfl, cgid);
	{
		struct nft_sandbox_cfg nc;
		char e2[200];

		nft_cfg_for(d, si, gen, &nc);
		nft_sandbox_remove(&nc, e2, sizeof(e2));
	}
	if (netns)
		proxy_listener_remove(d->proxy, id);
out_unregister:
	proxy_sandbox_remove(d->proxy, id);
out_unuse:
	si->used = false;
	pthread_mutex_unlock(&d->lock);
	rw_gen_unref(gen);
	return r;
}

/* Recompile one sandbox's policy; the old generation serves on failure. */
static int reload_one(struct daemon *d, struct sandbox_info *si, char *out, size_t outlen)
{
	struct rw_gen *gen;
	char err[600];
	int r = load_gen(d, si->policy, &gen, err, sizeof(err));

	if (r < 0) {
		log_error("sandbox=%s: reload refused, the previous policy keeps serving: %s", si->id,
			  err);
		snprintf(out, outlen, "%s", err);
		snprintf(si->last_error, sizeof(si->last_error), "%s", err);
		return r;
	}
	if (enforce_deny(d, si, gen, true, err, sizeof(err)) < 0) {
		log_error("sandbox=%s: reload refused, the previous policy keeps serving: %s", si->id,
			  err);
		snprintf(out, outlen, "%s", err);
		rw_gen_unref(gen);
		return -EIO;
	}
	proxy_sandbox_set_gen(d->proxy, si->id, gen);
	si->generation++;
	si->last_reload = time(NULL);
	si->last_error[0] = 0;
	snprintf(si->policy_hash, sizeof(si->policy_hash), "%s", pol_hash(rw_gen_pol(gen)));
	log_info("sandbox=%s: policy reloaded: %s (%s)", si->id, pol_source(rw_gen_pol(gen)),
		 pol_hash(rw_gen_pol(gen)));
	rw_gen_unref(gen);
	return 0;
}

static int do_reload(struct daemon *d, const char *id, char *out, size_t outlen)
{
	unsigned ok = 0, failed = 0;

	if (d->cp_url) {
		snprintf(out, outlen, "managed mode: policies come from the control plane (use sync)");
		return d->cps ? 0 : -EINVAL;
	}
	char first_err[600] = "";
	int r = 0;

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < MAX_SANDBOXES; i++) {
		struct sandbox_info *si = &d->sandboxes[i];
		char err[600];

		if (!si->used || (id && strcmp(si->id, id)))
			continue;
		if (reload_one(d, si, err, sizeof(err)) < 0) {
			if (!failed++)
				snprintf(first_err, sizeof(first_err), "sandbox %s: %s", si->id, err);
		} else {
			ok++;
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (id && !ok && !failed) {
		snprintf(out, outlen, "no sandbox '%s'", id);
		return -ENOENT;
	}
	if (failed) {
		snprintf(out, outlen, "%s%s", first_err,
			 failed > 1 ? " (and other sandboxes: see the daemon log)" : "");
		r = -EINVAL;
	} else {
		snprintf(out, outlen, "reloaded %u sandbox%s", ok, ok == 1 ? "" : "es");
	}
	return r;
}

static int do_detach(struct daemon *d, const char *id, char *err, size_t errlen)
{
	struct sandbox_info *si;
	int r;

	pthread_mutex_lock(&d->lock);
	si = sb_find(d, id);
	if (!si) {
		pthread_mutex_unlock(&d->lock);
		snprintf(err, errlen, "no sandbox '%s'", id);
		return -ENOENT;
	}
	/* Programs first: from here the sandbox's connects fail, never bypass. */
	r = bpfl_detach_cgroup(d->bpfl, id);
	if (r < 0)
		log_warn("sandbox=%s: detach BPF links: %s", id, strerror(-r));
	bpfl_sandbox_register(d->bpfl, si->cgroup_id, false);
	bpfl_clear_deny(d->bpfl, si->cgroup_id);
	bpfl_clear_udp_allow(d->bpfl, si->cgroup_id);
	{
		struct nft_sandbox_cfg nc;
		char e2[300];

		nft_cfg_for(d, si, NULL, &nc);
		if (nft_sandbox_remove(&nc, e2, sizeof(e2)) < 0)
			log_warn("sandbox=%s: nftables: %s", id, e2);
	}
	if (si->netns[0])
		proxy_listener_remove(d->proxy, id);
	proxy_sandbox_remove(d->proxy, id);
	sb_record_remove(d->run_dir, id);
	si->used = false;
	pthread_mutex_unlock(&d->lock);
	log_info("sandbox=%s detached", id);
	return 0;
}

/* ---- managed mode: control-plane hooks (sync thread) ---- */

static int cp_report(void *opaque, json_t *arr)
{
	struct daemon *d = opaque;

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < MAX_SANDBOXES; i++) {
		struct sandbox_info *si = &d->sandboxes[i];

		if (si->used)
			json_array_append_new(arr, json_pack("{s:s, s:s?}", "id", si->id,
							     "applied_hash",
							     si->applied_hash[0] ? si->applied_hash
										 : NULL));
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* One sandbox's new config: compile, then swap principal, policy, secrets
 * and deny set in one generation, so no request sees half of it. */
static int cp_apply(void *opaque, const struct cps_sandbox_cfg *c, char *err, size_t errlen)
{
	struct daemon *d = opaque;
	enum rw_state st = !strcmp(c->status, "active")     ? RW_ACTIVE
			   : !strcmp(c->status, "disabled") ? RW_DISABLED
							    : RW_REVOKED;
	struct pol_error pe = { 0 };
	struct sandbox_info *si;
	struct rw_gen *gen = NULL;
	struct pol *pol = NULL;
	int r;

	if (st == RW_ACTIVE) {
		r = pol_load_buffer_ex(c->id, c->policy_yaml, c->policy_len, cps_secret_value,
				       (void *)c, &pol, &pe);
		if (r < 0) {
			snprintf(err, errlen, "policy %u:%u: %s", pe.line, pe.col, pe.msg);
			return r;
		}
	} else {
		pol = pol_allow_all(); /* unused: the state refuses every request */
		if (!pol)
			return -ENOMEM;
	}
	r = gen_from_pol(d, pol, &gen, err, errlen);
	if (r < 0)
		return r;
	rw_gen_set_principal(gen, c->principal, st);
	pthread_mutex_lock(&d->lock);
	si = sb_find(d, c->id);
	if (!si) {
		pthread_mutex_unlock(&d->lock);
		rw_gen_unref(gen);
		snprintf(err, errlen, "sandbox detached meanwhile");
		return -ENOENT;
	}
	r = enforce_deny(d, si, gen, true, err, errlen);
	if (r < 0) {
		pthread_mutex_unlock(&d->lock);
		rw_gen_unref(gen);
		return r;
	}
	proxy_sandbox_set_gen(d->proxy, si->id, gen);
	snprintf(si->applied_hash, sizeof(si->applied_hash), "%s", c->config_hash);
	snprintf(si->principal, sizeof(si->principal), "%s", c->principal);
	snprintf(si->cp_status, sizeof(si->cp_status), "%s", c->status);
	snprintf(si->policy_hash, sizeof(si->policy_hash), "%s", c->config_hash);
	si->generation++;
	si->last_reload = time(NULL);
	si->last_error[0] = 0;
	pthread_mutex_unlock(&d->lock);
	log_info("sandbox=%s: control-plane config applied: principal '%s', %s, %s", c->id,
		 c->principal, c->status, c->config_hash);
	rw_gen_unref(gen);
	return 0;
}

static void cp_rejected(void *opaque, const char *id, const char *error)
{
	struct daemon *d = opaque;
	struct sandbox_info *si;

	pthread_mutex_lock(&d->lock);
	si = sb_find(d, id);
	if (si)
		snprintf(si->last_error, sizeof(si->last_error), "%s", error);
	pthread_mutex_unlock(&d->lock);
	log_warn("sandbox=%s: control-plane config not applied: %s", id, error);
}

static void cp_done(void *opaque, bool ok, const char *error)
{
	struct daemon *d = opaque;

	pthread_mutex_lock(&d->lock);
	if (ok) {
		d->cp_last_sync = time(NULL);
		d->cp_last_error[0] = 0;
		for (unsigned i = 0; i < MAX_SANDBOXES; i++)
			if (d->sandboxes[i].used)
				d->sandboxes[i].last_sync = d->cp_last_sync;
	} else {
		snprintf(d->cp_last_error, sizeof(d->cp_last_error), "%s", error ? error : "failed");
	}
	pthread_mutex_unlock(&d->lock);
	if (!ok)
		log_warn("control-plane sync failed (the last good configs keep serving): %s",
			 error ? error : "?");
}

/* ---- management API ops (run on the mgmt thread) ---- */

static json_t *sandbox_json(struct daemon *d, const struct sandbox_info *si)
{
	char ts[32] = "";
	struct tm tm;

	time_t t = d->cp_url ? si->last_sync : si->last_reload;

	if (t) {
		gmtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:b, s:s?, s:s?, s:i, s:s?}", "id",
			 si->id, "cgroup", si->cgroup, "netns", si->netns[0] ? si->netns : "host",
			 "policy", d->cp_url ? "controlplane" : si->policy[0] ? si->policy : "default",
			 "policy_hash", si->policy_hash,
			 "policy_generation", (json_int_t)si->generation, "principal", si->principal,
			 "synced_once", d->cp_url ? si->applied_hash[0] != 0 : true,
			 "last_sync_at", ts[0] ? ts : NULL, "last_error",
			 si->last_error[0] ? si->last_error : NULL, "open_connections",
			 (json_int_t)proxy_sandbox_conns(d->proxy, si->id), "status",
			 si->cp_status[0] ? si->cp_status : NULL);
}

/* Every attached sandbox as a JSON array (status, list, sync answers). */
static json_t *sandboxes_json(struct daemon *d)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < MAX_SANDBOXES; i++)
		if (d->sandboxes[i].used)
			json_array_append_new(arr, sandbox_json(d, &d->sandboxes[i]));
	pthread_mutex_unlock(&d->lock);
	return arr;
}

static void op_status(void *opaque, struct mgmt_call *c)
{
	struct daemon *d = opaque;
	json_t *st, *arr = sandboxes_json(d), *pj;
	unsigned long hits = 0, misses = 0;
	struct proxy_status ps;

	tls_cache_stats(d->tls, &hits, &misses);
	proxy_get_status(d->proxy, &ps);
	pj = json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i,"
		       " s:I, s:I}",
		       "sandboxes", (int)ps.sandboxes, "open_connections", (int)ps.open_connections,
		       "total_connections", (json_int_t)ps.total_connections, "total_requests",
		       (json_int_t)ps.total_requests, "refused_connections",
		       (json_int_t)ps.refused_connections, "upstream_errors",
		       (json_int_t)ps.upstream_errors, "tls_handshakes", (json_int_t)ps.tls_handshakes,
		       "upstream_dials", (json_int_t)ps.upstream_dials, "upstream_pool_reuses",
		       (json_int_t)ps.upstream_pool_reuses, "denied_requests",
		       (json_int_t)ps.denied_requests, "secrets_swapped",
		       (json_int_t)ps.secrets_swapped, "redactions", (json_int_t)ps.redactions,
		       "audit_dropped", (json_int_t)ps.audit_dropped, "workers", (int)ps.workers,
		       "udp_flows_open", (json_int_t)ps.udp_flows_open, "udp_flows_total",
		       (json_int_t)ps.udp_flows_total);
	st = json_pack("{s:s, s:i, s:I, s:s, s:i, s:i, s:i, s:s, s:I, s:I, s:o, s:o*}", "version",
		       SLUICE_VERSION, "pid", (json_int_t)getpid(), "uptime_s",
		       (json_int_t)(time(NULL) - d->started), "mode", d->cp_url ? "managed" : "local",
		       "port",
		       (json_int_t)d->port, "dns_port", (json_int_t)d->dns_port, "udp_port",
		       (json_int_t)d->udp_port, "ca",
		       tls_ca_path(d->tls), "cert_cache_hits", (json_int_t)hits,
		       "cert_cache_misses", (json_int_t)misses, "sandboxes", arr, "proxy", pj);
	if (st && d->cp_url) {
		/* managed mode: why the last sync round failed (null: it did not) */
		pthread_mutex_lock(&d->lock);
		json_object_set_new(st, "control_plane_last_error",
				    d->cp_last_error[0] ? json_string(d->cp_last_error) : json_null());
		pthread_mutex_unlock(&d->lock);
	}
	mgmt_reply(c, 200, st);
}

static void op_sandboxes(void *opaque, struct mgmt_call *c, const char *id)
{
	struct daemon *d = opaque;
	struct sandbox_info *si;
	json_t *one = NULL;

	if (!id) {
		mgmt_reply(c, 200, json_pack("{s:o}", "sandboxes", sandboxes_json(d)));
		return;
	}
	pthread_mutex_lock(&d->lock);
	si = sb_find(d, id);
	if (si)
		one = sandbox_json(d, si);
	pthread_mutex_unlock(&d->lock);
	if (!one)
		mgmt_reply_error(c, 404, "unknown_sandbox", "no sandbox '%s'", id);
	else
		mgmt_reply(c, 200, one);
}

static void op_attach(void *opaque, struct mgmt_call *c, const json_t *body)
{
	struct daemon *d = opaque;
	const char *id = json_string_value(json_object_get(body, "id"));
	const char *cg = json_string_value(json_object_get(body, "cgroup"));
	const char *ns = json_string_value(json_object_get(body, "netns"));
	const char *pol = json_string_value(json_object_get(body, "policy"));
	char err[700] = "";
	int r;

	if (!id || !cg) {
		mgmt_reply_error(c, 400, "bad_request", "attach needs \"id\" and \"cgroup\" strings");
		return;
	}
	r = do_attach(d, id, cg, ns && ns[0] ? ns : NULL, pol && pol[0] ? pol : NULL, true, err,
		      sizeof(err));
	if (r == -EEXIST)
		mgmt_reply_error(c, 409, "conflict", "%s", err);
	else if (r < 0 && strchr(err, ':') && pol && !strncmp(err, pol, strlen(pol)))
		mgmt_reply_error(c, 400, "policy_invalid", "%s", err);
	else if (r == -EINVAL || r == -ENOENT)
		mgmt_reply_error(c, 400, "bad_request", "%s", err);
	else if (r < 0)
		mgmt_reply_error(c, 500, "attach_failed", "%s", err[0] ? err : strerror(-r));
	else {
		json_t *one = NULL;

		struct sandbox_info *si;

		pthread_mutex_lock(&d->lock);
		si = sb_find(d, id);
		if (si)
			one = sandbox_json(d, si);
		pthread_mutex_unlock(&d->lock);
		mgmt_reply(c, 201, one);
	}
}

static void op_detach(void *opaque, struct mgmt_call *c, const char *id)
{
	char err[300] = "";
	int r = do_detach(opaque, id, err, sizeof(err));

	if (r == -ENOENT)
		mgmt_reply_error(c, 404, "unknown_sandbox", "%s", err);
	else if (r < 0)
		mgmt_reply_error(c, 500, "detach_failed", "%s", err);
	else
		mgmt_reply(c, 200, json_pack("{s:s}", "detached", id));
}

static void op_reload(void *opaque, struct mgmt_call *c, const char *id)
{
	char out[700] = "";
	int r = do_reload(opaque, id, out, sizeof(out));

	if (r == -ENOENT)
		mgmt_reply_error(c, 404, "unknown_sandbox", "%s", out);
	else if (r < 0)
		mgmt_reply_error(c, 400, "policy_invalid", "%s", out);
	else
		mgmt_reply(c, 200, json_pack("{s:s}", "message", out));
}

struct sync_wait {
	struct daemon *d;
	struct mgmt_call *c;
};

/* A sync that started after the request has been applied (sync thread). */
static void sync_done(void *arg, bool ok, const char *error)
{
	struct sync_wait *w = arg;
	json_t *arr = sandboxes_json(w->d);

	if (ok)
		mgmt_reply(w->c, 200, json_pack("{s:b, s:o}", "applied", true, "sandboxes", arr));
	else
		mgmt_reply(w->c, 502, json_pack("{s:s, s:s, s:o}", "error", "sync_failed", "message",
						 error ? error : "sync failed", "sandboxes", arr));
	free(w);
}

static void op_sync(void *opaque, struct mgmt_call *c, int wait_ms)
{
	struct daemon *d = opaque;
	struct sync_wait *w;
	int r;

	if (!d->cps) {
		mgmt_reply_error(c, 409, "not_managed",
				 "sluiced runs without --control-plane: nothing to sync (use reload)");
		return;
	}
	if (!wait_ms) {
		r = cps_sync_now(d->cps, NULL, NULL);
		if (r < 0)
			mgmt_reply_error(c, 503, "sync_unavailable", "%s", strerror(-r));
		else
			mgmt_reply(c, 202, json_pack("{s:b}", "requested", true));
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		mgmt_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	w->d = d;
	w->c = c;
	r = cps_sync_now(d->cps, sync_done, w);
	if (r < 0) {
		free(w);
		mgmt_reply_error(c, 503, "sync_unavailable", "%s", strerror(-r));
	}
}

static void op_metrics(void *opaque, struct mgmt_call *c)
{
	struct daemon *d = opaque;
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	int n;

	if (!buf) {
		mgmt_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	n = proxy_metrics_text(d->proxy, buf, cap);
	if (n >= 0) {
		unsigned long hits = 0, misses = 0;
		struct audit_stats as = { 0 };

		tls_cache_stats(d->tls, &hits, &misses);
		audit_stats(d->audit, &as);
		n += snprintf(buf + n, cap - (size_t)n,
			      "# HELP sluice_cert_cache_hits_total Leaf certificate cache hits.\n"
			      "# TYPE sluice_cert_cache_hits_total counter\n"
			      "sluice_cert_cache_hits_total %lu\n"
			      "# HELP sluice_cert_cache_misses_total Leaf certificates minted.\n"
			      "# TYPE sluice_cert_cache_misses_total counter\n"
			      "sluice_cert_cache_misses_total %lu\n"
			      "# HELP sluice_audit_records_total Audit lines written.\n"
			      "# TYPE sluice_audit_records_total counter\n"
			      "sluice_audit_records_total %llu\n"
			      "# HELP sluice_audit_write_errors_total Failed audit writes (retried).\n"
			      "# TYPE sluice_audit_write_errors_total counter\n"
			      "sluice_audit_write_errors_total %llu\n",
			      hits, misses, (unsigned long long)as.records,
			      (unsigned long long)as.write_errors);
	}
	if (n >= 0 && d->cps && (size_t)n < cap) {
		struct cps_stats cs;

		cps_get_stats(d->cps, &cs);
		n += snprintf(buf + n, cap - (size_t)n,
			      "# HELP sluice_sync_attempts_total Control-plane sync rounds.\n"
			      "# TYPE sluice_sync_attempts_total counter\n"
			      "sluice_sync_attempts_total %llu\n"
			      "# HELP sluice_sync_failures_total Failed control-plane sync rounds.\n"
			      "# TYPE sluice_sync_failures_total counter\n"
			      "sluice_sync_failures_total %llu\n"
			      "# HELP sluice_sync_last_success_timestamp_seconds Last good sync.\n"
			      "# TYPE sluice_sync_last_success_timestamp_seconds gauge\n"
			      "sluice_sync_last_success_timestamp_seconds %.3f\n",
			      (unsigned long long)cs.attempts, (unsigned long long)cs.failures,
			      cs.last_success_unix_ms / 1000.0);
	}
	if (n < 0 || (size_t)n >= cap)
		mgmt_reply_error(c, 500, "internal", "metrics too large");
	else
		mgmt_reply_text(c, 200, "text/plain; version=0.0.4", buf, (size_t)n);
	free(buf);
}

static bool op_ready(void *opaque)
{
	struct daemon *d = opaque;

	return d->started != 0;
}

static int restore_one(const struct sb_record *r, void *opaque)
{
	struct daemon *d = opaque;
	char err[512];

	if (!sb_is_cgroup2_dir(r->cgroup) || (r->netns[0] && access(r->netns, R_OK) < 0)) {
		log_warn("sandbox=%s: its cgroup or netns is gone; dropping it", r->id);
		bpfl_detach_cgroup(d->bpfl, r->id);
		sb_record_remove(d->run_dir, r->id);
		return 0;
	}
	if (do_attach(d, r->id, r->cgroup, r->netns[0] ? r->netns : NULL,
		      r->policy[0] ? r->policy : NULL, false, err, sizeof(err)) < 0)
		log_error("sandbox=%s: cannot restore: %s", r->id, err);
	return 0;
}

/* --dns-resolver ADDR[:PORT] or [V6]:PORT, else the first nameserver of
 * /etc/resolv.conf. */
static int dns_resolver_cfg(const char *spec, struct dns_cfg *c, char *err, size_t errlen)
{
	char buf[256] = "";

	dns_cfg_defaults(c);
	if (spec) {
		snprintf(buf, sizeof(buf), "%s", spec);
	} else {
		FILE *f = fopen("/etc/resolv.conf", "re");
		char line[512];

		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, " nameserver %255s", buf) == 1)
				break;
		if (f)
			fclose(f);
		if (!buf[0]) {
			snprintf(err, errlen, "no nameserver in /etc/resolv.conf; give --dns-resolver");
			return -ENOENT;
		}
	}
	if (netaddr_parse(buf, 53, &c->resolver, &c->resolver_len) < 0) {
		snprintf(err, errlen, "bad resolver address '%s' (want IP[:PORT] or [IPv6]:PORT)",
			 buf);
		return -EINVAL;
	}
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	static struct daemon dd;
	struct daemon *d = &dd;
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'S' },
		{ "run-dir", required_argument, NULL, 'R' },
		{ "bpf-pin-dir", required_argument, NULL, 'B' },
		{ "port", required_argument, NULL, 'p' },
		{ "dns-port", required_argument, NULL, 'D' },
		{ "dns-resolver", required_argument, NULL, 'r' },
		{ "udp-port", required_argument, NULL, OPT_UDP_PORT },
		{ "udp-idle-timeout-ms", required_argument, NULL, OPT_UDP_IDLE },
		{ "workers", required_argument, NULL, 'w' },
		{ "ca-cert", required_argument, NULL, 'c' },
		{ "ca-key", required_argument, NULL, 'k' },
		{ "upstream-ca", required_argument, NULL, 'u' },
		{ "hosts", required_argument, NULL, 'H' },
		{ "cgroup", required_argument, NULL, 'g' },
		{ "cert-cache", required_argument, NULL, 'C' },
		{ "max-conns", required_argument, NULL, 'M' },
		{ "connect-timeout", required_argument, NULL, 't' },
		{ "audit-log", required_argument, NULL, 'a' },
		{ "audit-queue", required_argument, NULL, 'q' },
		{ "default-policy", required_argument, NULL, 'P' },
		{ "drain-timeout", required_argument, NULL, 'T' },
		{ "mgmt-group", required_argument, NULL, 'G' },
		{ "control-plane", required_argument, NULL, 'U' },
		{ "control-plane-token-file", required_argument, NULL, 'K' },
		{ "control-plane-ca", required_argument, NULL, 'A' },
		{ "control-plane-cert", required_argument, NULL, OPT_CP_CERT },
		{ "control-plane-key", required_argument, NULL, OPT_CP_KEY },
		{ "node-name", required_argument, NULL, 'N' },
		{ "sync-interval", required_argument, NULL, 'I' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	struct tls_opts topts = { 0 };
	struct bpfl_opts bopts = { 0 };
	struct mgmt_ops ops = { .status = op_status, .sandboxes = op_sandboxes,
				.attach = op_attach, .detach = op_detach, .reload = op_reload,
				.sync = op_sync, .metrics = op_metrics, .ready = op_ready };
	struct mgmt_opts mopts = { 0 };
	char err[512], cgroot[PATH_MAX], selfcg[PATH_MAX];
	sigset_t sigs;
	int c, r, sig;
	long ncpu;

	d->state_dir = "/var/lib/sluice";
	d->run_dir = "/run/sluice";
	d->pin_dir = "/sys/fs/bpf/sluice";
	d->port = 15001;
	d->dns_port = 15053;
	d->udp_port = 15054;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	d->workers = ncpu > 0 ? (unsigned)ncpu : 1;
	d->cert_cache = 1024;
	d->audit_path = "/var/log/sluice/audit.jsonl";
	d->drain_s = 10;
	d->mgmt_gid = -1;
	proxy_cfg_defaults(&d->pcfg);
	pthread_mutex_init(&d->lock, NULL);

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'S': d->state_dir = optarg; break;
		case 'R': d->run_dir = optarg; break;
		case 'B': d->pin_dir = optarg; break;
		case 'p': d->port = (uint16_t)parse_num("--port", optarg, 1, 65535); break;
		case 'D': d->dns_port = (uint16_t)parse_num("--dns-port", optarg, 0, 65535); break;
		case 'r': d->dns_resolver = optarg; break;
		case OPT_UDP_PORT:
			d->udp_port = (uint16_t)parse_num("--udp-port", optarg, 0, 65535);
			break;
		case OPT_UDP_IDLE:
			d->pcfg.udp.idle_ms = (unsigned)parse_num("--udp-idle-timeout-ms", optarg, 100,
								  86400000);
			break;
		case 'w': d->workers = (unsigned)parse_num("--workers", optarg, 1, 256); break;
		case 'c': d->ca_cert = optarg; break;
		case 'k': d->ca_key = optarg; break;
		case 'u': d->upstream_ca = optarg; break;
		case 'H': d->hosts = optarg; break;
		case 'g': d->self_cgroup = optarg; break;
		case 'C': d->cert_cache = (unsigned)parse_num("--cert-cache", optarg, 1, 1000000); break;
		case 'M': d->pcfg.max_conns = (unsigned)parse_num("--max-conns", optarg, 1, 1 << 22); break;
		case 'a': d->audit_path = optarg; break;
		case 'q':
			/* a line may be up to half the queue: keep room for long paths */
			d->audit_queue = (size_t)parse_num("--audit-queue", optarg, 65536, 1L << 30);
			break;
		case 'P': d->default_policy = optarg; break;
		case 'T': d->drain_s = (unsigned)parse_num("--drain-timeout", optarg, 0, 3600); break;
		case 'G': d->mgmt_gid = (int)parse_num("--mgmt-group", optarg, 0, 1 << 30); break;
		case 'U': d->cp_url = optarg; break;
		case 'K': d->cp_token_file = optarg; break;
		case 'A': d->cp_ca = optarg; break;
		case OPT_CP_CERT: d->cp_cert = optarg; break;
		case OPT_CP_KEY: d->cp_key = optarg; break;
		case 'N': d->node = optarg; break;
		case 'I':
			d->cp_interval_ms = (unsigned)parse_num("--sync-interval", optarg, 100, 3600000);
			break;
		case 't':
			d->pcfg.connect_timeout_ms =
				(unsigned)parse_num("--connect-timeout", optarg, 1, 600) * 1000;
			break;
		case 'l':
			if (log_parse_level(optarg, &log_max_level) < 0) {
				fprintf(stderr, "sluiced: --log-level: error|warn|info|debug\n");
				return 2;
			}
			break;
		case 'V': printf("sluiced %s\n", SLUICE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!!d->ca_cert != !!d->ca_key) {
		fprintf(stderr, "sluiced: --ca-cert and --ca-key go together\n");
		return 2;
	}
	if (!!d->cp_cert != !!d->cp_key) {
		fprintf(stderr,
			"sluiced: --control-plane-cert and --control-plane-key go together\n");
		return 2;
	}
	if (d->cp_url) {
		static char host[256];
		const char *env = getenv("SLUICE_CONTROL_PLANE_TOKEN");

		if (d->cp_token_file) {
			FILE *f = fopen(d->cp_token_file, "re");
			char buf[4200] = "";

			if (!f || !fgets(buf, sizeof(buf), f)) {
				fprintf(stderr, "sluiced: --control-plane-token-file %s: cannot read\n",
					d->cp_token_file);
				return 1;
			}
			fclose(f);
			buf[strcspn(buf, "\r\n")] = 0;
			d->cp_token = strdup(buf);
		} else if (env) {
			d->cp_token = strdup(env);
		}
		if (!d->cp_token || !d->cp_token[0]) {
			fprintf(stderr, "sluiced: --control-plane needs a token "
					"(--control-plane-token-file or SLUICE_CONTROL_PLANE_TOKEN)\n");
			return 2;
		}
		if (!d->node) {
			gethostname(host, sizeof(host) - 1);
			d->node = host;
		}
		/* before anything is set up: a bad URL or an unusable certificate or key
		 * file stops the daemon here */
		{
			struct cps_opts co = { .url = d->cp_url, .token = d->cp_token,
					       .node = d->node, .ca_file = d->cp_ca,
					       .cert_file = d->cp_cert, .key_file = d->cp_key };

			if (cps_opts_check(&co, err, sizeof(err)) < 0) {
				fprintf(stderr, "sluiced: --control-plane: %s\n", err);
				return 1;
			}
		}
	}
	if (geteuid() != 0) {
		fprintf(stderr, "sluiced: must run as root (BPF, cgroups, network namespaces)\n");
		return 1;
	}
	/* Real secrets will live in this process: no core dumps, no ptrace by peers. */
	prctl(PR_SET_DUMPABLE, 0);
	signal(SIGPIPE, SIG_IGN);
	{
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}

	/* Our own cgroup: never a sandbox's, so our dials are never redirected. */
	if (d->dns_port && d->dns_port == d->port) {
		fprintf(stderr, "sluiced: --dns-port must differ from --port\n");
		return 2;
	}
	if (d->udp_port && (d->udp_port == d->port || d->udp_port == d->dns_port)) {
		fprintf(stderr, "sluiced: --udp-port must differ from --port and --dns-port\n");
		return 2;
	}
	if (sb_cgroup2_root(cgroot, sizeof(cgroot)) < 0) {
		fprintf(stderr, "sluiced: no cgroup v2 mount found in /proc/mounts\n");
		return 1;
	}
	snprintf(d->cgroot, sizeof(d->cgroot), "%s", cgroot);
	if (!d->self_cgroup) {
		snprintf(selfcg, sizeof(selfcg), "%s/sluiced", cgroot);
		d->self_cgroup = selfcg;
	}
	r = sb_cgroup_create(d->self_cgroup);
	if (r == 0)
		r = sb_cgroup_enter(d->self_cgroup, 0);
	if (r < 0) {
		fprintf(stderr, "sluiced: cannot move into cgroup %s: %s\n", d->self_cgroup,
			strerror(-r));
		return 1;
	}
	/* the management socket (0660) lives here: 0750, as the API requires */
	if (mkdir_p(d->run_dir, 0750) < 0 || mkdir_p(d->state_dir, 0700) < 0) {
		fprintf(stderr, "sluiced: cannot create %s or %s: %s\n", d->run_dir, d->state_dir,
			strerror(errno));
		return 1;
	}

	topts.state_dir = d->state_dir;
	topts.ca_cert = d->ca_cert;
	topts.ca_key = d->ca_key;
	topts.upstream_ca = d->upstream_ca;
	topts.cert_cache_size = d->cert_cache;
	r = tls_init(&topts, &d->tls, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sluiced: TLS setup: %s\n", err);
		return 1;
	}
	if (d->default_policy) {
		struct rw_gen *g;

		/* a broken default policy stops the daemon here, not at attach */
		if (load_gen(d, d->default_policy, &g, err, sizeof(err)) < 0) {
			fprintf(stderr, "sluiced: --default-policy: %s\n", err);
			return 1;
		}
		rw_gen_unref(g);
	}
	{
		char dir[PATH_MAX], *slash;

		snprintf(dir, sizeof(dir), "%s", d->audit_path);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			mkdir_p(dir, 0700);
		}
		r = audit_open(d->audit_path, d->audit_queue, &d->audit, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "sluiced: --audit-log: %s\n", err);
			return 1;
		}
	}
	r = resolve_init(d->hosts, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sluiced: --hosts: %s\n", err);
		return 1;
	}

	/* Block the signals we wait for before any thread starts. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if (d->dns_port) {
		r = dns_resolver_cfg(d->dns_resolver, &d->pcfg.dns, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "sluiced: DNS: %s (or --dns-port 0 to refuse sandbox DNS)\n",
				err);
			return 1;
		}
		d->pcfg.dns_enabled = true;
	}
	bopts.pin_dir = d->pin_dir;
	bopts.listen_port = d->port;
	bopts.dns_port = d->dns_port;
	bopts.udp_port = d->udp_port;
	d->pcfg.udp_enabled = d->udp_port != 0;
	inet_pton(AF_INET, "127.0.0.1", &bopts.listen_addr4);
	bopts.listen_addr6 = in6addr_loopback;
	r = bpfl_open(&bopts, &d->bpfl);
	if (r < 0) {
		fprintf(stderr, "sluiced: loading BPF programs: %s (need root, kernel >= 5.15 with "
				"BTF; SLUICE_BPF_DEBUG=1 shows the verifier's words)\n",
			strerror(-r));
		return 1;
	}
	if (!bpfl_uses_socket_cgroup(d->bpfl))
		log_warn("BPF: this kernel's verifier refused the walk to a socket's cgroup; the "
			 "programs use the calling task's cgroup instead (a socket passed to a "
			 "process in another cgroup counts as that cgroup's)");
	if (!bpfl_uses_set_retval(d->bpfl))
		log_warn("BPF: no bpf_set_retval on this kernel: refusals are EPERM, not EACCES");
	r = proxy_new(&d->pcfg, d->tls, d->bpfl, &d->proxy);
	if (r == 0) {
		proxy_set_audit(d->proxy, d->audit);
		r = proxy_start(d->proxy, d->workers);
	}
	if (r < 0) {
		fprintf(stderr, "sluiced: starting workers: %s\n", strerror(-r));
		return 1;
	}
	d->started = time(NULL);
	sb_record_foreach(d->run_dir, restore_one, d);

	snprintf(d->sock_path, sizeof(d->sock_path), "%s/sluiced.sock", d->run_dir);
	mopts.unix_path = d->sock_path;
	mopts.unix_gid = d->mgmt_gid;
	mopts.tcp_listen = getenv("SLUICE_MANAGEMENT_LISTEN");
	mopts.token = getenv("SLUICE_MANAGEMENT_TOKEN");
	mopts.ca_path = tls_ca_path(d->tls);
	r = mgmt_start(&mopts, &ops, d, &d->mgmt, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sluiced: management API: %s\n", err);
		return 1;
	}
	if (d->cp_url) {
		struct cps_hooks h = { .report = cp_report, .apply = cp_apply,
				       .rejected = cp_rejected, .done = cp_done, .opaque = d };
		struct cps_opts co = { .url = d->cp_url, .token = d->cp_token, .node = d->node,
				       .interval_ms = d->cp_interval_ms, .ca_file = d->cp_ca,
				       .cert_file = d->cp_cert, .key_file = d->cp_key };

		r = cps_start(&co, &h, &d->cps, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "sluiced: --control-plane: %s\n", err);
			return 1;
		}
	}
	log_info("ready: version %s, %u workers, port %u, CA %s, control %s", SLUICE_VERSION,
		 d->workers, d->port, tls_ca_path(d->tls), d->sock_path);

	for (;;) {
		sig = sigwaitinfo(&sigs, NULL);
		if (sig == SIGHUP) {
			char out[700];

			r = audit_reopen(d->audit);
			if (r < 0)
				log_error("SIGHUP: audit log %s not reopened: %s", d->audit_path,
					  strerror(-r));
			r = do_reload(d, NULL, out, sizeof(out));
			log_info("SIGHUP: audit log reopened; %s", out);
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT)
			break;
	}
	log_info("stopping on signal %d: draining open connections (up to %u s); attached "
		 "sandboxes stay attached and fail closed until sluiced is back",
		 sig, d->drain_s);
	mgmt_stop(d->mgmt);
	cps_stop(d->cps);
	r = proxy_drain(d->proxy, d->drain_s * 1000u);
	if (r > 0)
		log_warn("drain deadline: closing %d connection(s) still open", r);
	proxy_free(d->proxy);
	if (audit_drain(d->audit, 5000) < 0)
		log_error("audit log: records still queued at exit could not be written (%s)",
			  d->audit_path);
	audit_close(d->audit);
	bpfl_close(d->bpfl);
	tls_free(d->tls);
	return 0;
}
