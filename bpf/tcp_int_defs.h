/* TCP-INT wire constants: THE one definition of the option's layout, encodings and scales.
 *
 * Plain `#define NAME <integer literal>` lines only, so that every consumer can read it:
 *   - the eBPF programs (through tcp_int.h),
 *   - the P4 program (p4/tcp_int.p4 #includes this file through the P4 preprocessor),
 *   - the Python side (testbed/bpf/abi.py parses these lines; no second copy).
 * No C types, no casts, no U/L suffixes, no expressions: a literal per name.
 *
 * Facts: the public TCP-INT host tool (p4lang/p4app-TCP-INT v0.2-v0.4) and the Third Eye
 * paper. Explained in docs/tcp-int.md.
 */
#ifndef TCP_INT_DEFS_H
#define TCP_INT_DEFS_H

/* ---- the option ------------------------------------------------------------------- */
#define TCP_INT_OPT_KIND 114            /* 0x72 */
#define TCP_INT_OPT_LEN 12
#define TCP_INT_TTL_INIT 64             /* hosts' initial TTL: HopIDEcr = 64 - HopID */
#define TCP_INT_MAX_HOPS 15             /* HopIDEcr is 4 bits; 0 means "none" */

/* Layout versions (experiment key int.version). */
#define TCP_INT_VERSION_V02 2
#define TCP_INT_VERSION_V04 4

/* ---- v0.4 layout (default; byte offsets from the option's Kind byte) --------------- */
#define TCP_INT_V04_OFF_TFK_LS 2        /* TagFreqKey high nibble | LinkSpeed low nibble */
#define TCP_INT_V04_OFF_INTVAL 3        /* most congested hop's INTval */
#define TCP_INT_V04_OFF_HOPID 4         /* IP TTL at the most congested hop */
#define TCP_INT_V04_OFF_HOPLAT 5        /* 3 bytes, big endian, 256 ns units, saturating */
#define TCP_INT_V04_OFF_INTVALECR 8     /* echo of INTval */
#define TCP_INT_V04_OFF_LS_IDECR 9      /* HopIDEcr high nibble | LinkSpeedEcr low nibble */
#define TCP_INT_V04_OFF_HOPLATECR 10    /* 2 bytes, LITTLE endian (public tool: host order) */
#define TCP_INT_V04_HOPLATECR_WIDE 32768 /* 0x8000: set = value is HopLat >> 8 */
#define TCP_INT_V04_HOPLATECR_NARROW_MAX 32767 /* HopLat up to 15 bits is echoed as is */

/* ---- v0.2 layout (inet-tub/powertcp-linux's TCP-INT) ------------------------------- */
#define TCP_INT_V02_OFF_INTVAL 2
#define TCP_INT_V02_OFF_INTVALECR 3
#define TCP_INT_V02_OFF_ID 4            /* IP TTL at the most congested hop */
#define TCP_INT_V02_OFF_IDECR 5         /* echo of the raw TTL (not 64 - TTL) */
#define TCP_INT_V02_OFF_SWLAT 6         /* 3 bytes, big endian, 256 ns units */
#define TCP_INT_V02_OFF_SWLATECR 9      /* 3 bytes, big endian: echo of SwLat */

/* The bytes a switch may rewrite lie in [SW_FIRST, SW_LAST] for both layouts; an
 * 8-byte window starting at an even TCP-header offset always covers them (checksum). */
#define TCP_INT_SW_FIRST 2
#define TCP_INT_SW_LAST 8

/* ---- INTval encoding ---------------------------------------------------------------- */
#define TCP_INT_INTVAL_QDEPTH 128       /* >= 0x80: (ival & 0x7f) queue quanta */
#define TCP_INT_INTVAL_LOW_MAX 127      /* 0x7f: top of the utilization/avail-bw range */

/* Scales (experiment key int.scale). PUBLIC = the wire format of the public tool. */
#define TCP_INT_SCALE_PUBLIC 0
#define TCP_INT_SCALE_FINE 1

/* Queue quantum: qdepth_bytes = (ival & 0x7f) << shift. Public: 8 KiB steps (to ~1 MiB),
 * made for 10-400 Gb/s switches. Fine: 2 KiB steps (to 254 KiB) for Mb/s emulated links
 * whose FIFOs hold tens of packets: one quantum is ~1.4 full-size packets. */
#define TCP_INT_QDEPTH_SHIFT_PUBLIC 13
#define TCP_INT_QDEPTH_SHIFT_FINE 11

/* INTval < 0x80, v0.4 public: available bandwidth in Gb/s = 0x7f - ival.
 * Fine (v0.4): utilization in 1/127 of the link = ival (0x7f: fully used). Links here run
 * at Mb/s, where whole Gb/s of spare capacity would always read "0x7f - 0 = idle". */
#define TCP_INT_V04_AVAILBW_UNIT_MBPS 1000
#define TCP_INT_V04_FINE_UTIL_FULL 127
/* INTval < 0x80, v0.2: utilization in percent = ival << shift (public: 8 % steps). */
#define TCP_INT_V02_UTIL_SHIFT_PUBLIC 3
#define TCP_INT_V02_UTIL_SHIFT_FINE 0

/* HopLat / SwLat: upper 24 bits of a 32-bit nanosecond sum = units of 256 ns. */
#define TCP_INT_HOPLAT_SHIFT 8
#define TCP_INT_HOPLAT_MAX 16777215     /* 0xffffff: saturation */

/* ---- LinkSpeed codes (4 bits; the hop that set INTval) ------------------------------ */
#define TCP_INT_LS_UNKNOWN 0
#define TCP_INT_LS_10G 1
#define TCP_INT_LS_25G 2
#define TCP_INT_LS_40G 3
#define TCP_INT_LS_50G 4
#define TCP_INT_LS_100G 5
#define TCP_INT_LS_200G 6
#define TCP_INT_LS_400G 7
/* Fine scale only: codes 8-15, unused by the public tool (it decodes them as 0 = unknown),
 * name speeds below 10 Gb/s. A link gets the largest code not above its rate. */
#define TCP_INT_LS_10M 8
#define TCP_INT_LS_50M 9
#define TCP_INT_LS_100M 10
#define TCP_INT_LS_200M 11
#define TCP_INT_LS_500M 12
#define TCP_INT_LS_1G 13
#define TCP_INT_LS_2500M 14
#define TCP_INT_LS_5G 15
/* Mb/s of each code (TCP_INT_LS_MBPS_<code>). */
#define TCP_INT_LS_MBPS_0 0
#define TCP_INT_LS_MBPS_1 10000
#define TCP_INT_LS_MBPS_2 25000
#define TCP_INT_LS_MBPS_3 40000
#define TCP_INT_LS_MBPS_4 50000
#define TCP_INT_LS_MBPS_5 100000
#define TCP_INT_LS_MBPS_6 200000
#define TCP_INT_LS_MBPS_7 400000
#define TCP_INT_LS_MBPS_8 10
#define TCP_INT_LS_MBPS_9 50
#define TCP_INT_LS_MBPS_10 100
#define TCP_INT_LS_MBPS_11 200
#define TCP_INT_LS_MBPS_12 500
#define TCP_INT_LS_MBPS_13 1000
#define TCP_INT_LS_MBPS_14 2500
#define TCP_INT_LS_MBPS_15 5000

/* ---- TagFreqKey (4 bits, set by the sender, read by switches) ----------------------- */
#define TCP_INT_TFK_APPLIMITED 0
#define TCP_INT_TFK_CONGESTED 4
#define TCP_INT_TFK_UNCONGESTED 7
#define TCP_INT_TFK_SWITCH_DEFAULT 15   /* 0xf: switch's configured frequency */
/* Dynamic tagging: a flow whose echoed queue exceeds this is CONGESTED (public: 10000 B). */
#define TCP_INT_CONG_QDEPTH_THRESH 10000

/* ---- host/switch program limits ------------------------------------------------------ */
#define TCP_INT_MAX_PORTS 1024          /* switch ports with a configured rate */
#define TCP_INT_EVENTS_BYTES 262144     /* trace ring buffer (bytes, power of 2) */
#define TCP_INT_UTIL_ONE 1024           /* utilization fixed point: 1024 = 100 % */

#endif /* TCP_INT_DEFS_H */
