/* Packet parsing shared by every program that reads headers from packet memory
 * (libbpf programs built against vmlinux.h, and bcc programs built against the kernel's
 * uapi headers: only types both provide are used here).
 *
 * One cursor: `pos` is the next unread byte, `end` the end of the linear data; every
 * parse_* checks the header against `end` before reading it, advances `pos` past it and
 * returns it (or NULL). One byte-order convention: what these helpers return as numbers
 * (EtherTypes) is in host order, compared with the ETH_P_* constants as written; header
 * fields read through the returned pointers stay in network order.
 */
#ifndef TESTBED_COMMON_PARSE_H
#define TESTBED_COMMON_PARSE_H

/* vmlinux.h carries no macros: the EtherTypes both toolchains need. */
#ifndef ETH_P_IP
#define ETH_P_IP 0x0800
#endif
#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif
#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#define PARSE_IP_FRAG_MASK 0x1fff  /* fragment offset of frag_off (host order) */

struct cursor {
	void *pos;
	void *end;
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

/* The Ethernet header; *proto = its EtherType (host order), or NULL. */
static __always_inline struct ethhdr *parse_eth(struct cursor *c, int *proto)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end)
		return NULL;
	c->pos = eth + 1;
	*proto = bpf_ntohs(eth->h_proto);
	return eth;
}

/* One 802.1Q tag after the Ethernet header; *proto = the EtherType it carries. */
static __always_inline struct vlan_tag *parse_vlan(struct cursor *c, int *proto)
{
	struct vlan_tag *v = c->pos;

	if ((void *)(v + 1) > c->end)
		return NULL;
	c->pos = v + 1;
	*proto = bpf_ntohs(v->proto);
	return v;
}

/* The IPv4 header, options included and skipped, or NULL (short or bad IHL). */
static __always_inline struct iphdr *parse_ipv4(struct cursor *c)
{
	struct iphdr *ip = c->pos;
	__u32 len;

	if ((void *)(ip + 1) > c->end)
		return NULL;
	len = ip->ihl * 4;
	if (len < sizeof(*ip) || c->pos + len > c->end)
		return NULL;
	c->pos += len;
	return ip;
}

/* The fixed IPv6 header (extension headers are the caller's), or NULL. */
static __always_inline struct ipv6hdr *parse_ipv6(struct cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return NULL;
	c->pos = ip6 + 1;
	return ip6;
}

/* Does this IPv4 packet carry the L4 header (not a later fragment)? */
static __always_inline int ipv4_has_l4(const struct iphdr *ip)
{
	return (bpf_ntohs(ip->frag_off) & PARSE_IP_FRAG_MASK) == 0;
}

#endif /* TESTBED_COMMON_PARSE_H */
