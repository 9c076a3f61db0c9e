/* -*- P4_16 -*- */
/*
 * tcp_int.p4 — BMv2 simple_switch (v1model) program applying the TCP-INT switch rule
 * (docs/tcp-int.md): for every TCP packet carrying the TCP-INT option, at egress,
 *
 *     if local.INTval > pkt.INTval or nobody stamped yet:
 *         pkt.INTval = local.INTval; pkt.HopID = ip.ttl (or the port's HopID)
 *     pkt.HopLat = saturating_add(pkt.HopLat, latency through this port)
 *
 * then fixes the TCP checksum, over IPv4 or IPv6. Every other packet (untagged TCP, UDP,
 * ICMP) is forwarded unchanged (routers: apart from the Ethernet rewrite and the TTL or
 * hop-limit decrement). The rule,
 * encodings and sampling are those of the eBPF switch (bpf/tcp_int_switch.bpf.c), so an
 * experiment reads the same on either backend.
 *
 * One program, two roles, chosen by which tables the control plane fills: an L2 switch
 * (l2_mac: MAC → port, broadcast flooded) or a router (ipv4_lpm and ipv6_lpm, with
 * ECMP groups). A router answers neither ARP nor neighbour discovery: the kernel of its
 * namespace does, for the addresses of its ports. IPv6 extension headers are not parsed:
 * such packets are routed, not stamped.
 *
 * Local congestion comes from BMv2's queueing metadata: `enq_qdepth` (packets in the
 * egress queue when this packet was enqueued, itself excluded: the backlog a tc egress
 * program sees on Linux) × an assumed packet size → bytes → INTval; when the queue is
 * empty, the port's utilization over a window. Latency: `deq_timedelta` (µs waited in
 * the queue) plus the packet's serialization at the link rate, as the eBPF switch's
 * backlog/rate + own size/rate.
 *
 * Table entries (routes, MACs, ports) are data pushed over P4Runtime by
 * testbed/network/backends/bmv2.py from the topology; nothing here names an address.
 * The option's constants (kind, length, encodings, quanta) come from the one header
 * shared with the eBPF switch and the host side: bpf/tcp_int_defs.h.
 *
 * Rebuild: see p4/Makefile (`make -C p4`).
 */
#include <core.p4>
#include <v1model.p4>

#include "tcp_int_defs.h"

/* BMv2-only defaults, used until the control plane sets tcpint_params. BMv2 counts its
 * queue in packets: assume full-size frames (1500-byte MTU + Ethernet header). */
#define TCPINT_BMV2_PKT_BYTES 1514
#define TCPINT_BMV2_WINDOW_US 1000          /* utilization window */
#define MAX_PORTS 512                       /* egress_port is 9 bits */
#define DROP_PORT 511                       /* v1model's mark_to_drop() */
#define UTIL_ONE_SHIFT 10                   /* TCP_INT_UTIL_ONE == 1 << 10 */
#define UTIL_MULT_SHIFT 32                  /* fixed point of set_port's utilMult */
#define AVAIL_SHIFT 24                      /* fixed point of set_port's availMult */
#define SER_SHIFT 16                        /* fixed point of set_port's serNs */

const bit<16> TYPE_IPV4  = 0x0800;
const bit<16> TYPE_IPV6  = 0x86dd;
const bit<8>  PROTO_ICMP = 1;
const bit<8>  PROTO_TCP  = 6;
const bit<8>  PROTO_ICMPV6 = 58;
const bit<8>  ICMPV6_TIME_EXCEEDED = 3;
const bit<8>  ICMPV6_ECHO = 128;
const bit<8>  ICMPV6_ECHO_REPLY = 129;
const bit<8>  ICMP_ECHO_REPLY = 0;
const bit<8>  ICMP_ECHO = 8;
const bit<8>  ICMP_TIME_EXCEEDED = 11;
/* A time-exceeded frame: Ethernet, IPv4, ICMP, then the quote (the packet's IPv4 header
 * without options and the first 8 bytes of its L4 header, as Linux routers quote). */
#define TE_FRAME_BYTES 70
/* The same over IPv6: Ethernet, IPv6, ICMPv6, the packet's IPv6 header, 8 L4 bytes
 * (+ UDP's first payload word: see quote_word_t). */
#define TE6_FRAME_BYTES 110
#define TE6_ICMP_BYTES 56
const bit<8>  PROTO_UDP  = 17;
const bit<8>  TCPOPT_EOL = 0;
const bit<8>  TCPOPT_NOP = 1;
const bit<32> PKT_INSTANCE_TYPE_REPLICATION = 5;   /* simple_switch: a multicast copy */

/* TCP options occupy at most 40 bytes; the ones before TCP-INT are kept byte by byte. */
#define TCP_MAX_OPT_BYTES 40

/*************************************************************************
*********************** H E A D E R S  ***********************************
*************************************************************************/

typedef bit<9>  egressSpec_t;
typedef bit<48> macAddr_t;
typedef bit<32> ip4Addr_t;
typedef bit<128> ip6Addr_t;

header ethernet_t {
    macAddr_t dstAddr;
    macAddr_t srcAddr;
    bit<16>   etherType;
}

header ipv4_t {
    bit<4>    version;
    bit<4>    ihl;
    bit<8>    diffserv;
    bit<16>   totalLen;
    bit<16>   identification;
    bit<3>    flags;
    bit<13>   fragOffset;
    bit<8>    ttl;
    bit<8>    protocol;
    bit<16>   hdrChecksum;
    ip4Addr_t srcAddr;
    ip4Addr_t dstAddr;
}

header ipv6_t {
    bit<4>    version;
    bit<8>    trafficClass;
    bit<20>   flowLabel;
    bit<16>   payloadLen;
    bit<8>    nextHdr;
    bit<8>    hopLimit;
    ip6Addr_t srcAddr;
    ip6Addr_t dstAddr;
}

/* IPv4 options, if any: carried through and covered by the header checksum. */
header ipv4_options_t {
    varbit<320> options;
}

header tcp_t {
    bit<16> srcPort;
    bit<16> dstPort;
    bit<32> seqNo;
    bit<32> ackNo;
    bit<4>  dataOffset;
    bit<4>  res;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgentPtr;
}

header icmp_t {
    bit<8>  type;
    bit<8>  code;
    bit<16> checksum;
    bit<32> rest;            /* unused in time-exceeded */
}

/* The first 8 bytes of a non-TCP L4 header (UDP, ICMP): quoted in a time-exceeded. */
header l4_head_t {
    bit<8>  b0;              /* ICMP, ICMPv6: type */
    bit<56> rest;
}

/* IPv6 routers quote as much as fits in 1280 bytes (RFC 4443), and tools rely on it:
 * traceroute and noobprobe carry a UDP probe's sequence in its first payload word. We
 * quote that word too (the checksum must cover every quoted byte, so it is parsed). */
header quote_word_t {
    bit<32> word;
}

/* One byte of a TCP option that precedes TCP-INT (NOP, timestamp, SACK, ...). */
header tcp_opt_byte_t {
    bit<8> value;
}

/* The TCP-INT option, named by the v0.4 layout (docs/tcp-int.md); the egress maps the
 * v0.2 layout's fields onto these bytes when the experiment asks for v0.2. */
header tcp_int_t {
    bit<8>  kind;            /* TCP_INT_OPT_KIND */
    bit<8>  len;             /* TCP_INT_OPT_LEN */
    bit<4>  tagFreqKey;
    bit<4>  linkSpeed;
    bit<8>  intVal;
    bit<8>  hopId;
    bit<24> hopLat;          /* 256 ns units */
    bit<8>  intValEcr;
    bit<4>  linkSpeedEcr;
    bit<4>  hopIdEcr;
    bit<16> hopLatEcr;
}

struct metadata {
    bit<8>  optLeft;         /* option bytes not yet parsed */
    bit<8>  optBytes;        /* bytes left in the option being copied */
    bit<8>  optLeftAtInt;    /* option bytes left where TCP-INT starts */
    bit<16> l4Len;           /* TCP length for the pseudo-header */
    bit<1>  tcpIntUpdated;
    bit<16> ecmpGroup;
    bit<16> ecmpSize;
    bit<16> ecmpMember;
    /* set by the tcpint_params table */
    bit<1>  stamp;
    bit<1>  v02;
    bit<1>  fineScale;
    bit<8>  qdepthShift;
    bit<32> pktBytes;
    bit<48> windowUs;
    /* set by the tcpint_port table */
    bit<1>  portKnown;
    bit<4>  lsCode;
    bit<8>  portHopId;
    bit<64> utilMult;
    bit<32> availMult;
    bit<64> serNs;
    /* set by the tcpint_tag_every table */
    bit<4>  tagFreqKey;
    bit<32> tagEvery;
    /* set by the ecn_mark table (docs/ecn.md) */
    bit<1>  ecnOn;
    bit<32> ecnMin;          /* queued packets */
    bit<32> ecnMax;
    bit<64> ecnStep;         /* ramp: P(mark) x 2^16 = (q - min) * ecnStep >> 16 */
}

struct headers {
    ethernet_t                        ethernet;
    ipv4_t                            teIpv4;      /* a time-exceeded's own IPv4 */
    ipv6_t                            teIpv6;      /* (or IPv6) and ICMP header, */
    icmp_t                            teIcmp;      /* before the quote */
    ipv4_t                            ipv4;
    ipv4_options_t                    ipv4Options;
    ipv6_t                            ipv6;
    l4_head_t                         l4Head;
    quote_word_t                      quoteWord;
    tcp_t                             tcp;
    tcp_opt_byte_t[TCP_MAX_OPT_BYTES] preIntOpts;
    tcp_int_t                         tcpInt;
}

/*************************************************************************
*********************** P A R S E R  ***********************************
*************************************************************************/

parser MyParser(packet_in packet,
                out headers hdr,
                inout metadata meta,
                inout standard_metadata_t standard_metadata) {

    state start {
        transition parse_ethernet;
    }

    state parse_ethernet {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            TYPE_IPV4: parse_ipv4;
            TYPE_IPV6: parse_ipv6;
            default: accept;
        }
    }

    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        transition select(hdr.ipv4.ihl) {
            5: parse_ipv4_payload;
            default: parse_ipv4_options;
        }
    }

    state parse_ipv4_options {
        packet.extract(hdr.ipv4Options,
                       (bit<32>)(((bit<16>)hdr.ipv4.ihl - 5) * 32));
        transition parse_ipv4_payload;
    }

    state parse_ipv4_payload {
        /* Only first fragments hold a TCP header. */
        transition select(hdr.ipv4.fragOffset, hdr.ipv4.protocol) {
            (0, PROTO_TCP): parse_tcp;
            (0, _): parse_l4_head;
            default: accept;
        }
    }

    /* No extension headers: anything else after the fixed header is routed unparsed. */
    state parse_ipv6 {
        packet.extract(hdr.ipv6);
        transition select(hdr.ipv6.nextHdr) {
            PROTO_TCP: parse_tcp;
            PROTO_ICMPV6: parse_l4_head;
            PROTO_UDP: parse_udp6;
            default: accept;
        }
    }

    /* UDP with at least one payload word (length >= 12; no parser ranges in BMv2). */
    state parse_udp6 {
        packet.extract(hdr.l4Head);
        transition select(hdr.ipv6.payloadLen) {
            0 &&& 0xfff0: parse_udp6_short;     /* 0..15 */
            default: parse_quote_word;
        }
    }

    state parse_udp6_short {
        transition select(hdr.ipv6.payloadLen) {
            12: parse_quote_word;
            13: parse_quote_word;
            14: parse_quote_word;
            15: parse_quote_word;
            default: accept;
        }
    }

    state parse_quote_word {
        packet.extract(hdr.quoteWord);
        transition accept;
    }

    state parse_l4_head {
        packet.extract(hdr.l4Head);
        transition accept;
    }

    state parse_tcp {
        packet.extract(hdr.tcp);
        meta.optLeft = ((bit<8>)hdr.tcp.dataOffset << 2) - 20;
        transition select(hdr.tcp.dataOffset) {
            0 &&& 0xc: accept;   /* 0..3: malformed, routed as is */
            4: accept;           /* malformed */
            5: accept;           /* no options */
            default: parse_tcp_options;
        }
    }

    /* The option list, walked by a loop of states bounded by the 40-byte stack. Options
     * before TCP-INT are copied byte by byte; after TCP-INT nothing needs parsing. */
    state parse_tcp_options {
        transition select(meta.optLeft) {
            0: accept;
            default: parse_tcp_option;
        }
    }

    state parse_tcp_option {
        transition select(packet.lookahead<bit<8>>()) {
            TCPOPT_EOL: accept;
            TCPOPT_NOP: parse_nop;
            TCP_INT_OPT_KIND: parse_maybe_tcp_int;
            default: parse_other_option;
        }
    }

    state parse_nop {
        packet.extract(hdr.preIntOpts.next);
        meta.optLeft = meta.optLeft - 1;
        transition parse_tcp_options;
    }

    state parse_maybe_tcp_int {
        transition select(packet.lookahead<bit<16>>()[7:0]) {
            TCP_INT_OPT_LEN: parse_tcp_int;
            default: parse_other_option;
        }
    }

    state parse_tcp_int {
        meta.optLeftAtInt = meta.optLeft;
        packet.extract(hdr.tcpInt);
        transition accept;
    }

    state parse_other_option {
        meta.optBytes = packet.lookahead<bit<16>>()[7:0];
        transition select(meta.optBytes) {
            0: accept;           /* malformed length: stop, route as is */
            1: accept;
            default: parse_option_byte;
        }
    }

    state parse_option_byte {
        packet.extract(hdr.preIntOpts.next);
        meta.optBytes = meta.optBytes - 1;
        meta.optLeft = meta.optLeft - 1;
        transition select(meta.optBytes) {
            0: parse_tcp_options;
            default: parse_option_byte;
        }
    }
}

/*************************************************************************
************   C H E C K S U M    V E R I F I C A T I O N   *************
*************************************************************************/

control MyVerifyChecksum(inout headers hdr, inout metadata meta) {
    /* Nothing is verified: a router passes what it gets, and the egress checksums are
     * recomputed over the received bytes, so a corrupt packet stays corrupt. */
    apply { }
}

/*************************************************************************
**************  I N G R E S S   P R O C E S S I N G   *******************
*************************************************************************/

control MyIngress(inout headers hdr,
                  inout metadata meta,
                  inout standard_metadata_t standard_metadata) {

    action drop() {
        mark_to_drop(standard_metadata);
    }

    /* L2 switches (topology `switches:`): known MACs go out of one port, broadcast to
     * a multicast group of every port; frames are not modified. Routers leave this
     * table empty. */
    action l2_forward(egressSpec_t port) {
        standard_metadata.egress_spec = port;
    }

    action flood(bit<16> group) {
        standard_metadata.mcast_grp = group;
    }

    table l2_mac {
        key = {
            hdr.ethernet.dstAddr: exact;
        }
        actions = {
            l2_forward;
            flood;
            NoAction;
        }
        size = 1024;
        default_action = NoAction();
    }

    /* Routers (topology `routers:`): next hop out of `port`, from this port's MAC to the
     * next hop's MAC. */
    action ipv4_forward(egressSpec_t port, macAddr_t srcAddr, macAddr_t dstAddr) {
        standard_metadata.egress_spec = port;
        hdr.ethernet.srcAddr = srcAddr;
        hdr.ethernet.dstAddr = dstAddr;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
    }

    action ipv6_forward(egressSpec_t port, macAddr_t srcAddr, macAddr_t dstAddr) {
        standard_metadata.egress_spec = port;
        hdr.ethernet.srcAddr = srcAddr;
        hdr.ethernet.dstAddr = dstAddr;
        hdr.ipv6.hopLimit = hdr.ipv6.hopLimit - 1;
    }

    /* Several equal-cost next hops: a flow hash (in apply: it differs by family) picks
     * member 0..size-1 of the group. */
    action ecmp_group(bit<16> group, bit<16> size) {
        meta.ecmpGroup = group;
        meta.ecmpSize = size;
    }

    table ipv4_lpm {
        key = {
            hdr.ipv4.dstAddr: lpm;
        }
        actions = {
            ipv4_forward;
            ecmp_group;
            drop;
        }
        size = 1024;
        default_action = drop();
    }

    table ipv6_lpm {
        key = {
            hdr.ipv6.dstAddr: lpm;
        }
        actions = {
            ipv6_forward;
            ecmp_group;
            drop;
        }
        size = 1024;
        default_action = drop();
    }

    /* TTL expires here: answer with ICMP time-exceeded from the address of the port the
     * packet came in on (`addr`, `mac`: set per port by the control plane), back out of
     * that port, quoting the packet's IPv4 header and first 8 L4 bytes. */
    action time_exceeded(ip4Addr_t addr, macAddr_t mac) {
        hdr.teIpv4.setValid();
        hdr.teIpv4.version = 4;
        hdr.teIpv4.ihl = 5;
        hdr.teIpv4.diffserv = 0xc0;                 /* as Linux: internetwork control */
        hdr.teIpv4.totalLen = TE_FRAME_BYTES - 14;
        hdr.teIpv4.identification = 0;
        hdr.teIpv4.flags = 0;
        hdr.teIpv4.fragOffset = 0;
        hdr.teIpv4.ttl = 64;
        hdr.teIpv4.protocol = PROTO_ICMP;
        hdr.teIpv4.srcAddr = addr;
        hdr.teIpv4.dstAddr = hdr.ipv4.srcAddr;
        hdr.teIcmp.setValid();
        hdr.teIcmp.type = ICMP_TIME_EXCEEDED;
        hdr.teIcmp.code = 0;
        hdr.teIcmp.rest = 0;
        hdr.ethernet.dstAddr = hdr.ethernet.srcAddr;
        hdr.ethernet.srcAddr = mac;
        standard_metadata.egress_spec = standard_metadata.ingress_port;
        truncate(TE_FRAME_BYTES);
    }

    table icmp_source {
        key = {
            standard_metadata.ingress_port: exact;
        }
        actions = {
            time_exceeded;
            drop;
        }
        size = MAX_PORTS;
        default_action = drop();
    }

    /* The same for IPv6: ICMPv6 time-exceeded (type 3) from the port's global address,
     * quoting the packet's IPv6 header and first 8 L4 bytes. */
    action time_exceeded6(ip6Addr_t addr, macAddr_t mac) {
        hdr.teIpv6.setValid();
        hdr.teIpv6.version = 6;
        hdr.teIpv6.trafficClass = 0;
        hdr.teIpv6.flowLabel = 0;
        hdr.teIpv6.payloadLen = TE6_ICMP_BYTES;
        hdr.teIpv6.nextHdr = PROTO_ICMPV6;
        hdr.teIpv6.hopLimit = 64;
        hdr.teIpv6.srcAddr = addr;
        hdr.teIpv6.dstAddr = hdr.ipv6.srcAddr;
        hdr.teIcmp.setValid();
        hdr.teIcmp.type = ICMPV6_TIME_EXCEEDED;
        hdr.teIcmp.code = 0;
        hdr.teIcmp.rest = 0;
        hdr.ethernet.dstAddr = hdr.ethernet.srcAddr;
        hdr.ethernet.srcAddr = mac;
        standard_metadata.egress_spec = standard_metadata.ingress_port;
        /* cut to TE6_FRAME_BYTES (+ the UDP word) in apply: truncate() once only */
    }

    table icmp6_source {
        key = {
            standard_metadata.ingress_port: exact;
        }
        actions = {
            time_exceeded6;
            drop;
        }
        size = MAX_PORTS;
        default_action = drop();
    }

    table ecmp_nhop {
        key = {
            meta.ecmpGroup: exact;
            meta.ecmpMember: exact;
        }
        actions = {
            ipv4_forward;
            ipv6_forward;
            drop;
        }
        size = 1024;
        default_action = drop();
    }

    /* Ground truth for the queue sampler (testbed/instruments/bmv2_qsample.py): packets
     * sent towards each egress port's queue. Queue drops = these - sent - queued. */
    register<bit<64>>(MAX_PORTS) toPortPkts;

    apply {
        if (!l2_mac.apply().hit) {
            if (hdr.ipv6.isValid()) {
                /* Link-local and multicast (neighbour discovery, MLD) stay on the link:
                 * the node's kernel answers what is for it. */
                if (hdr.ipv6.dstAddr[127:120] == 0xff ||
                    hdr.ipv6.dstAddr[127:118] == 10w0x3fa) {
                    drop();
                } else if (hdr.ipv6.hopLimit <= 1) {
                    if (hdr.tcp.isValid() || (hdr.l4Head.isValid() &&
                        (hdr.ipv6.nextHdr != PROTO_ICMPV6 || hdr.l4Head.b0 == ICMPV6_ECHO ||
                         hdr.l4Head.b0 == ICMPV6_ECHO_REPLY))) {
                        if (icmp6_source.apply().hit) {
                            if (hdr.quoteWord.isValid()) {
                                hdr.teIpv6.payloadLen = TE6_ICMP_BYTES + 4;
                                truncate(TE6_FRAME_BYTES + 4);
                            } else {
                                truncate(TE6_FRAME_BYTES);
                            }
                        }
                    } else {
                        drop();
                    }
                } else {
                    switch (ipv6_lpm.apply().action_run) {
                        ecmp_group: {
                            hash(meta.ecmpMember, HashAlgorithm.crc16, (bit<16>)0,
                                 { hdr.ipv6.srcAddr, hdr.ipv6.dstAddr, hdr.ipv6.nextHdr,
                                   hdr.tcp.srcPort, hdr.tcp.dstPort },
                                 meta.ecmpSize);
                            ecmp_nhop.apply();
                        }
                    }
                }
            } else if (!hdr.ipv4.isValid()) {
                drop();
            } else if (hdr.ipv4.ttl <= 1) {
                /* Never about an ICMP error, a fragment or a header with options. */
                if (hdr.ipv4.ihl == 5 && hdr.ipv4.fragOffset == 0 &&
                    (hdr.tcp.isValid() || (hdr.l4Head.isValid() &&
                     (hdr.ipv4.protocol != PROTO_ICMP || hdr.l4Head.b0 == ICMP_ECHO ||
                      hdr.l4Head.b0 == ICMP_ECHO_REPLY)))) {
                    icmp_source.apply();
                } else {
                    drop();
                }
            } else {
                switch (ipv4_lpm.apply().action_run) {
                    ecmp_group: {
                        hash(meta.ecmpMember, HashAlgorithm.crc16, (bit<16>)0,
                             { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.ipv4.protocol,
                               hdr.tcp.srcPort, hdr.tcp.dstPort },
                             meta.ecmpSize);
                        ecmp_nhop.apply();
                    }
                }
            }
        }
        if (standard_metadata.mcast_grp == 0 &&
            standard_metadata.egress_spec != DROP_PORT) {
            bit<64> n;
            toPortPkts.read(n, (bit<32>)standard_metadata.egress_spec);
            toPortPkts.write((bit<32>)standard_metadata.egress_spec, n + 1);
        }
    }
}

/*************************************************************************
****************  E G R E S S   P R O C E S S I N G   *******************
*************************************************************************/

/* The steps of MyEgress, one control each. Registers are declared in MyEgress and
 * handed to the step that updates them (their control-plane names stay MyEgress.*);
 * tables are applied by MyEgress itself, between the steps that use what they set. */

/* Ground truth for the queue sampler: the queue's depth when this packet left it, and
 * packets and bytes sent, per egress port. */
control PortCounters(in standard_metadata_t sm)
                    (register<bit<32>> qdepthPkts, register<bit<64>> sentPkts,
                     register<bit<64>> sentBytes) {
    apply {
        bit<32> port = (bit<32>)sm.egress_port;
        bit<64> n;
        qdepthPkts.write(port, (bit<32>)sm.deq_qdepth);
        sentBytes.read(n, port);
        sentBytes.write(port, n + (bit<64>)sm.packet_length);
        if (sm.instance_type == 0) {     /* not a flooded copy */
            sentPkts.read(n, port);
            sentPkts.write(port, n + 1);
        }
    }
}

/* ECN marking (docs/ecn.md), the eBPF switch's rule (bpf/ecn_mark.h) on the queue the
 * packet found (enq_qdepth, packets): q > max: CE; min < q <= max: CE with
 * (q - min) * ecnStep >> 16 in 2^16; ECT packets only, the others counted. */
control EcnMarking(inout headers hdr, in metadata meta, in standard_metadata_t sm)
                  (register<bit<64>> ecnIpPkts, register<bit<64>> ecnEctPkts,
                   register<bit<64>> ecnOverPkts, register<bit<64>> ecnMarkedPkts,
                   register<bit<64>> ecnNotEctOver) {
    apply {
        bit<32> port = (bit<32>)sm.egress_port;
        bit<32> q = (bit<32>)sm.enq_qdepth;
        bit<2> ecn = hdr.ipv4.isValid() ? hdr.ipv4.diffserv[1:0]
                                         : hdr.ipv6.trafficClass[1:0];
        bit<64> n;
        ecnIpPkts.read(n, port);
        ecnIpPkts.write(port, n + 1);
        if (ecn != 0) {
            ecnEctPkts.read(n, port);
            ecnEctPkts.write(port, n + 1);
        }
        if (q > meta.ecnMin) {
            bit<1> mark = 1;
            ecnOverPkts.read(n, port);
            ecnOverPkts.write(port, n + 1);
            if (q <= meta.ecnMax) {
                bit<64> draw;
                random(draw, 0, 65535);
                if (draw >= (((bit<64>)(q - meta.ecnMin) * meta.ecnStep) >> 16)) {
                    mark = 0;
                }
            }
            if (mark == 1 && ecn == 0) {
                ecnNotEctOver.read(n, port);
                ecnNotEctOver.write(port, n + 1);
            } else if (mark == 1 && ecn != 3) {
                if (hdr.ipv4.isValid()) {
                    hdr.ipv4.diffserv[1:0] = 3;   /* the IPv4 checksum is recomputed */
                } else {
                    hdr.ipv6.trafficClass[1:0] = 3;
                }
                ecnMarkedPkts.read(n, port);
                ecnMarkedPkts.write(port, n + 1);
            }
        }
    }
}

/* Utilization of the egress link over fixed windows of every packet sent (the last full
 * window's, TCP_INT_UTIL_ONE = 100 %; 0 after a window or more of silence).
 * (Conditionals live in apply blocks: BMv2 actions cannot branch.) */
control LinkUtilization(in metadata meta, in standard_metadata_t sm)
                       (register<bit<48>> winStartUs, register<bit<32>> winBytes,
                        register<bit<32>> portUtil) {
    apply {
        bit<32> port = (bit<32>)sm.egress_port;
        bit<48> now = sm.egress_global_timestamp;
        bit<48> start;
        bit<32> bytes;
        winStartUs.read(start, port);
        winBytes.read(bytes, port);
        bytes = bytes + sm.packet_length;
        if (now - start >= meta.windowUs) {
            bit<64> util = ((bit<64>)bytes * meta.utilMult) >> UTIL_MULT_SHIFT;
            if (now - start >= meta.windowUs << 1) {
                util = 0;    /* the link sat idle for longer than a window */
            }
            if (util > TCP_INT_UTIL_ONE) {
                util = TCP_INT_UTIL_ONE;
            }
            portUtil.write(port, (bit<32>)util);
            winStartUs.write(port, now);
            bytes = 0;
        }
        winBytes.write(port, bytes);
    }
}

/* Stamp 1 in `tagEvery` tagged packets (the switch samples what it stamps). */
control TcpIntSampling(in metadata meta, out bool stamp) {
    apply {
        stamp = true;
        if (meta.tagEvery > 1) {
            bit<32> draw;
            random(draw, 0, meta.tagEvery - 1);
            stamp = draw == 0;
        }
    }
}

/* This hop's congestion as an INTval: the queue when there is one (then the link is
 * fully used), else how much of the link is used, in the version's and scale's unit. */
control HopIntVal(in metadata meta, in standard_metadata_t sm, out bit<8> local)
                 (register<bit<32>> portUtil) {
    apply {
        bit<32> qbytes = (bit<32>)sm.enq_qdepth * meta.pktBytes;
        bit<32> quanta = qbytes >> meta.qdepthShift;
        if (quanta > TCP_INT_INTVAL_LOW_MAX) {
            quanta = TCP_INT_INTVAL_LOW_MAX;
        }
        bit<32> util;
        portUtil.read(util, (bit<32>)sm.egress_port);
        bit<32> low;
        if (meta.v02 == 1) {
            /* utilization in percent, in steps of 2^shift */
            low = (util * 100) >> UTIL_ONE_SHIFT;
            if (meta.fineScale == 0) {
                low = low >> TCP_INT_V02_UTIL_SHIFT_PUBLIC;
            }
        } else if (meta.fineScale == 1) {
            /* utilization in 1/127 of the link */
            low = (util * TCP_INT_V04_FINE_UTIL_FULL) >> UTIL_ONE_SHIFT;
        } else {
            /* 0x7f - available Gb/s */
            bit<64> avail = ((bit<64>)(TCP_INT_UTIL_ONE - util) * (bit<64>)meta.availMult)
                            >> AVAIL_SHIFT;
            if (avail > TCP_INT_INTVAL_LOW_MAX) {
                avail = TCP_INT_INTVAL_LOW_MAX;
            }
            low = TCP_INT_INTVAL_LOW_MAX - (bit<32>)avail;
        }
        if (low > TCP_INT_INTVAL_LOW_MAX) {
            low = TCP_INT_INTVAL_LOW_MAX;
        }
        local = (bit<8>)low;
        if (qbytes != 0) {
            local = TCP_INT_INTVAL_QDEPTH | (bit<8>)quanta;
        }
    }
}

/* The option's fields this rule touches, wherever the version puts them, updated:
 *   v0.4: byte 3 INTval, byte 4 HopID, bytes 5-7 HopLat
 *   v0.2: byte 2 INTval, byte 4 ID,    bytes 6-8 SwLat (no TagFreqKey: 0xf)
 * INTval/HopID/LinkSpeed: this hop's if it is the most congested so far (or nobody
 * stamped yet); HopLat: time in BMv2's queue (µs) plus this packet's serialization at
 * the link rate, in ns → 256 ns units, added with saturation (64-bit: nothing wraps). */
control StampOption(inout headers hdr, inout metadata meta, in standard_metadata_t sm,
                    in bit<8> local) {
    apply {
        bit<8>  pktIntVal = hdr.tcpInt.intVal;
        bit<24> pktLat = hdr.tcpInt.hopLat;
        if (meta.v02 == 1) {
            pktIntVal = hdr.tcpInt.tagFreqKey ++ hdr.tcpInt.linkSpeed;
            pktLat = hdr.tcpInt.hopLat[15:0] ++ hdr.tcpInt.intValEcr;
        }
        bit<8> hopId = hdr.ipv4.ttl;
        if (hdr.ipv6.isValid()) {
            hopId = hdr.ipv6.hopLimit;
        }
        if (meta.portHopId != 0) {
            hopId = meta.portHopId;
        }
        bool takeOver = local > pktIntVal || hdr.tcpInt.hopId == 0;

        bit<64> latNs = (bit<64>)sm.deq_timedelta * 1000 +
                        (((bit<64>)sm.packet_length * meta.serNs) >> SER_SHIFT);
        bit<64> sum = (bit<64>)pktLat + (latNs >> TCP_INT_HOPLAT_SHIFT);
        if (sum > TCP_INT_HOPLAT_MAX) {
            sum = TCP_INT_HOPLAT_MAX;
        }

        if (meta.v02 == 1) {
            if (takeOver) {
                hdr.tcpInt.tagFreqKey = local[7:4];
                hdr.tcpInt.linkSpeed = local[3:0];
                hdr.tcpInt.hopId = hopId;
            }
            hdr.tcpInt.hopLat[15:0] = sum[23:8];
            hdr.tcpInt.intValEcr = sum[7:0];
        } else {
            if (takeOver) {
                hdr.tcpInt.intVal = local;
                hdr.tcpInt.hopId = hopId;
                hdr.tcpInt.linkSpeed = meta.lsCode;
            }
            hdr.tcpInt.hopLat = (bit<24>)sum;
        }

        if (hdr.ipv6.isValid()) {
            meta.l4Len = hdr.ipv6.payloadLen;     /* no extension headers were parsed */
        } else {
            meta.l4Len = hdr.ipv4.totalLen - ((bit<16>)hdr.ipv4.ihl << 2);
        }
        meta.tcpIntUpdated = 1;
    }
}

control MyEgress(inout headers hdr,
                 inout metadata meta,
                 inout standard_metadata_t standard_metadata) {

    /* Ground truth for the queue sampler (PortCounters). */
    register<bit<32>>(MAX_PORTS) qdepthPkts;
    register<bit<64>>(MAX_PORTS) sentPkts;
    register<bit<64>>(MAX_PORTS) sentBytes;

    /* Per egress port: bytes sent in the current window and the last full window's
     * utilization (TCP_INT_UTIL_ONE = 100 %), used when the queue is empty. */
    register<bit<48>>(MAX_PORTS) winStartUs;
    register<bit<32>>(MAX_PORTS) winBytes;
    register<bit<32>>(MAX_PORTS) portUtil;

    /* Switch-wide settings (the experiment's `int:`), set by the control plane through
     * the default action. Defaults: stamping on, v0.4, public scale. */
    action set_tcpint_params(bit<1> stamp, bit<1> v02, bit<1> fineScale,
                             bit<8> qdepthShift, bit<32> pktBytes, bit<48> windowUs) {
        meta.stamp = stamp;
        meta.v02 = v02;
        meta.fineScale = fineScale;
        meta.qdepthShift = qdepthShift;
        meta.pktBytes = pktBytes;
        meta.windowUs = windowUs;
    }

    table tcpint_params {
        actions = {
            set_tcpint_params;
        }
        size = 1;
        default_action = set_tcpint_params(1, 0, 0, TCP_INT_QDEPTH_SHIFT_PUBLIC,
                                           TCPINT_BMV2_PKT_BYTES, TCPINT_BMV2_WINDOW_US);
    }

    /* Per egress port, from the link it drives (BMv2 has no division at run time, so
     * the control plane precomputes the scale factors):
     *   lsCode     LinkSpeed code written when this port stamps
     *   hopId      HopID written; 0 = the packet's IP TTL (routers)
     *   utilMult   window bytes → utilization: bytes * utilMult >> UTIL_MULT_SHIFT
     *   availMult  unused share → available Gb/s: (ONE - util) * availMult >> AVAIL_SHIFT
     *   serNs      ns to serialize one byte at the link rate, << SER_SHIFT
     * A port without an entry has an unknown rate: no utilization, no serialization. */
    action set_port(bit<4> lsCode, bit<8> hopId, bit<64> utilMult, bit<32> availMult,
                    bit<64> serNs) {
        meta.portKnown = 1;
        meta.lsCode = lsCode;
        meta.portHopId = hopId;
        meta.utilMult = utilMult;
        meta.availMult = availMult;
        meta.serNs = serNs;
    }

    table tcpint_port {
        key = {
            standard_metadata.egress_port: exact;
        }
        actions = {
            set_port;
            NoAction;
        }
        size = MAX_PORTS;
        default_action = NoAction();
    }

    /* Sampling: stamp 1 in `every` tagged packets, by the sender's TagFreqKey. */
    action set_tag_every(bit<32> every) {
        meta.tagEvery = every;
    }

    table tcpint_tag_every {
        key = {
            meta.tagFreqKey: exact;
        }
        actions = {
            set_tag_every;
        }
        size = 16;
        default_action = set_tag_every(1);
    }

    /* ECN marking (EcnMarking; byte thresholds arrive as packets of pktBytes). */
    register<bit<64>>(MAX_PORTS) ecnIpPkts;
    register<bit<64>>(MAX_PORTS) ecnEctPkts;
    register<bit<64>>(MAX_PORTS) ecnOverPkts;
    register<bit<64>>(MAX_PORTS) ecnMarkedPkts;
    register<bit<64>>(MAX_PORTS) ecnNotEctOver;

    action set_ecn_mark(bit<32> minPkts, bit<32> maxPkts, bit<64> step) {
        meta.ecnOn = 1;
        meta.ecnMin = minPkts;
        meta.ecnMax = maxPkts;
        meta.ecnStep = step;
    }

    table ecn_mark {
        key = {
            standard_metadata.egress_port: exact;
        }
        actions = {
            set_ecn_mark;
            NoAction;
        }
        size = MAX_PORTS;
        default_action = NoAction();
    }

    PortCounters(qdepthPkts, sentPkts, sentBytes) portCounters;
    EcnMarking(ecnIpPkts, ecnEctPkts, ecnOverPkts, ecnMarkedPkts, ecnNotEctOver) ecnMarking;
    LinkUtilization(winStartUs, winBytes, portUtil) linkUtilization;
    TcpIntSampling() tcpIntSampling;
    HopIntVal(portUtil) hopIntVal;
    StampOption() stampOption;

    apply {
        /* A flooded copy never goes back out of the port it came in on. */
        if (standard_metadata.instance_type == PKT_INSTANCE_TYPE_REPLICATION &&
            standard_metadata.egress_port == standard_metadata.ingress_port) {
            mark_to_drop(standard_metadata);
            return;
        }
        portCounters.apply(standard_metadata);
        if (hdr.teIcmp.isValid()) {
            return;         /* a time-exceeded of ours: the quote is not stamped */
        }
        if (!hdr.ipv4.isValid() && !hdr.ipv6.isValid()) {
            return;
        }
        meta.ecnOn = 0;
        ecn_mark.apply();
        if (meta.ecnOn == 1) {
            ecnMarking.apply(hdr, meta, standard_metadata);
        }
        tcpint_params.apply();
        tcpint_port.apply();
        if (meta.portKnown == 1) {
            linkUtilization.apply(meta, standard_metadata);
        }

        /* Tagged: a TCP-INT option that lies wholly inside the TCP header. */
        if (meta.stamp == 0 || !hdr.tcpInt.isValid() ||
            meta.optLeftAtInt < TCP_INT_OPT_LEN) {
            return;
        }
        meta.tagFreqKey = hdr.tcpInt.tagFreqKey;
        if (meta.v02 == 1) {
            meta.tagFreqKey = TCP_INT_TFK_SWITCH_DEFAULT;
        }
        tcpint_tag_every.apply();
        bool stamp;
        tcpIntSampling.apply(meta, stamp);
        if (!stamp) {
            return;
        }
        bit<8> local;
        hopIntVal.apply(meta, standard_metadata, local);
        stampOption.apply(hdr, meta, standard_metadata, local);
    }
}

/*************************************************************************
*************   C H E C K S U M    C O M P U T A T I O N   **************
*************************************************************************/

control MyComputeChecksum(inout headers hdr, inout metadata meta) {
    apply {
        /* The TTL changed. */
        update_checksum(
            hdr.ipv4.isValid(),
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.totalLen,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.fragOffset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr,
              hdr.ipv4Options.options },
            hdr.ipv4.hdrChecksum,
            HashAlgorithm.csum16);

        /* An IPv4 time-exceeded: its IPv4 header, then ICMP over its header and the quote (the
         * original IPv4 header and the first 8 bytes of its L4 header; of the parsed
         * headers that follow, only those 8 bytes survive the truncation). */
        update_checksum(
            hdr.teIpv4.isValid(),
            { hdr.teIpv4.version,
              hdr.teIpv4.ihl,
              hdr.teIpv4.diffserv,
              hdr.teIpv4.totalLen,
              hdr.teIpv4.identification,
              hdr.teIpv4.flags,
              hdr.teIpv4.fragOffset,
              hdr.teIpv4.ttl,
              hdr.teIpv4.protocol,
              hdr.teIpv4.srcAddr,
              hdr.teIpv4.dstAddr },
            hdr.teIpv4.hdrChecksum,
            HashAlgorithm.csum16);
        update_checksum(
            hdr.teIpv4.isValid(),
            { hdr.teIcmp.type,
              hdr.teIcmp.code,
              hdr.teIcmp.rest,
              hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.totalLen,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.fragOffset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.hdrChecksum,
              hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr,
              hdr.l4Head.b0,
              hdr.l4Head.rest,
              hdr.tcp.srcPort,
              hdr.tcp.dstPort,
              hdr.tcp.seqNo },
            hdr.teIcmp.checksum,
            HashAlgorithm.csum16);

        /* An ICMPv6 time-exceeded: its checksum covers a pseudo-header (RFC 4443), the
         * ICMPv6 header and the quote (the original IPv6 header, first 8 L4 bytes). */
        update_checksum(
            hdr.teIpv6.isValid(),
            { hdr.teIpv6.srcAddr,
              hdr.teIpv6.dstAddr,
              16w0,
              hdr.teIpv6.payloadLen,
              24w0,
              hdr.teIpv6.nextHdr,
              hdr.teIcmp.type,
              hdr.teIcmp.code,
              hdr.teIcmp.rest,
              hdr.ipv6.version,
              hdr.ipv6.trafficClass,
              hdr.ipv6.flowLabel,
              hdr.ipv6.payloadLen,
              hdr.ipv6.nextHdr,
              hdr.ipv6.hopLimit,
              hdr.ipv6.srcAddr,
              hdr.ipv6.dstAddr,
              hdr.l4Head.b0,
              hdr.l4Head.rest,
              hdr.quoteWord.word,
              hdr.tcp.srcPort,
              hdr.tcp.dstPort,
              hdr.tcp.seqNo },
            hdr.teIcmp.checksum,
            HashAlgorithm.csum16);

        /* The TCP-INT option changed: pseudo-header, TCP header, the option bytes
         * before TCP-INT (invalid stack entries count for nothing), TCP-INT, and the
         * unparsed rest (later options and data) as payload. */
        update_checksum_with_payload(
            meta.tcpIntUpdated == 1 && hdr.ipv4.isValid(),
            { hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr,
              8w0,
              hdr.ipv4.protocol,
              meta.l4Len,
              hdr.tcp.srcPort,
              hdr.tcp.dstPort,
              hdr.tcp.seqNo,
              hdr.tcp.ackNo,
              hdr.tcp.dataOffset,
              hdr.tcp.res,
              hdr.tcp.flags,
              hdr.tcp.window,
              hdr.tcp.urgentPtr,
              hdr.preIntOpts[0].value,  hdr.preIntOpts[1].value,
              hdr.preIntOpts[2].value,  hdr.preIntOpts[3].value,
              hdr.preIntOpts[4].value,  hdr.preIntOpts[5].value,
              hdr.preIntOpts[6].value,  hdr.preIntOpts[7].value,
              hdr.preIntOpts[8].value,  hdr.preIntOpts[9].value,
              hdr.preIntOpts[10].value, hdr.preIntOpts[11].value,
              hdr.preIntOpts[12].value, hdr.preIntOpts[13].value,
              hdr.preIntOpts[14].value, hdr.preIntOpts[15].value,
              hdr.preIntOpts[16].value, hdr.preIntOpts[17].value,
              hdr.preIntOpts[18].value, hdr.preIntOpts[19].value,
              hdr.preIntOpts[20].value, hdr.preIntOpts[21].value,
              hdr.preIntOpts[22].value, hdr.preIntOpts[23].value,
              hdr.preIntOpts[24].value, hdr.preIntOpts[25].value,
              hdr.preIntOpts[26].value, hdr.preIntOpts[27].value,
              hdr.tcpInt.kind,
              hdr.tcpInt.len,
              hdr.tcpInt.tagFreqKey,
              hdr.tcpInt.linkSpeed,
              hdr.tcpInt.intVal,
              hdr.tcpInt.hopId,
              hdr.tcpInt.hopLat,
              hdr.tcpInt.intValEcr,
              hdr.tcpInt.linkSpeedEcr,
              hdr.tcpInt.hopIdEcr,
              hdr.tcpInt.hopLatEcr },
            hdr.tcp.checksum,
            HashAlgorithm.csum16);
        /* The same over IPv6: its pseudo-header (RFC 8200 8.1). */
        update_checksum_with_payload(
            meta.tcpIntUpdated == 1 && hdr.ipv6.isValid(),
            { hdr.ipv6.srcAddr,
              hdr.ipv6.dstAddr,
              16w0,
              meta.l4Len,
              24w0,
              hdr.ipv6.nextHdr,
              hdr.tcp.srcPort,
              hdr.tcp.dstPort,
              hdr.tcp.seqNo,
              hdr.tcp.ackNo,
              hdr.tcp.dataOffset,
              hdr.tcp.res,
              hdr.tcp.flags,
              hdr.tcp.window,
              hdr.tcp.urgentPtr,
              hdr.preIntOpts[0].value,  hdr.preIntOpts[1].value,
              hdr.preIntOpts[2].value,  hdr.preIntOpts[3].value,
              hdr.preIntOpts[4].value,  hdr.preIntOpts[5].value,
              hdr.preIntOpts[6].value,  hdr.preIntOpts[7].value,
              hdr.preIntOpts[8].value,  hdr.preIntOpts[9].value,
              hdr.preIntOpts[10].value, hdr.preIntOpts[11].value,
              hdr.preIntOpts[12].value, hdr.preIntOpts[13].value,
              hdr.preIntOpts[14].value, hdr.preIntOpts[15].value,
              hdr.preIntOpts[16].value, hdr.preIntOpts[17].value,
              hdr.preIntOpts[18].value, hdr.preIntOpts[19].value,
              hdr.preIntOpts[20].value, hdr.preIntOpts[21].value,
              hdr.preIntOpts[22].value, hdr.preIntOpts[23].value,
              hdr.preIntOpts[24].value, hdr.preIntOpts[25].value,
              hdr.preIntOpts[26].value, hdr.preIntOpts[27].value,
              hdr.tcpInt.kind,
              hdr.tcpInt.len,
              hdr.tcpInt.tagFreqKey,
              hdr.tcpInt.linkSpeed,
              hdr.tcpInt.intVal,
              hdr.tcpInt.hopId,
              hdr.tcpInt.hopLat,
              hdr.tcpInt.intValEcr,
              hdr.tcpInt.linkSpeedEcr,
              hdr.tcpInt.hopIdEcr,
              hdr.tcpInt.hopLatEcr },
            hdr.tcp.checksum,
            HashAlgorithm.csum16);
    }
}

/*************************************************************************
***********************  D E P A R S E R  *******************************
*************************************************************************/

control MyDeparser(packet_out packet, in headers hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.teIpv4);
        packet.emit(hdr.teIpv6);
        packet.emit(hdr.teIcmp);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.ipv4Options);
        packet.emit(hdr.ipv6);
        packet.emit(hdr.l4Head);
        packet.emit(hdr.quoteWord);
        packet.emit(hdr.tcp);
        packet.emit(hdr.preIntOpts);
        packet.emit(hdr.tcpInt);
    }
}

/*************************************************************************
***********************  S W I T C H  *******************************
*************************************************************************/

V1Switch(
MyParser(),
MyVerifyChecksum(),
MyIngress(),
MyEgress(),
MyComputeChecksum(),
MyDeparser()
) main;
