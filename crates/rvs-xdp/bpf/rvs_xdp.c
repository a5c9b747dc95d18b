// SPDX-License-Identifier: (Apache-2.0 OR MIT) AND GPL-2.0
// rvs's XDP program: hands the packets rvs must see (virtual-service traffic, replies of
// NAT real servers) to rvs's AF_XDP sockets and passes everything else to the kernel.
// Built by crates/rvs-xdp/build.rs with `clang -O2 -target bpf`; loaded with aya.
//
// What it takes (the same sets the TUN plumbing routes into the TUN):
//   * to a VIP address (any port: rvs writes back what no service claims, as with the
//     TUN, and the kernel delivers it);
//   * from a NAT real server's (address, protocol, port), port 0 / protocol 0 = any.
// What it leaves to the kernel (rvs's TUN path sees it there, if it must): packets bigger
// than an AF_XDP frame takes (a GSO packet a generic-XDP bridge sees whole), fragments,
// packets whose TTL / hop limit would run out (the kernel sends the ICMP error), IPv4 with
// options, ICMP, anything but TCP, UDP and SCTP, and any packet when this interface queue
// has no rvs socket (XSKMAP miss: XDP_PASS).
// What it drops: a reply of a NAT real server whose destination the director routes to a
// blackhole, unreachable or prohibit route (bpf_fib_lookup, as `ip route get DST` asks: no
// source, protocol or ports, so rvs's own steering rules do not match). The kernel's IPVS
// never sees such a packet (its input route discards it first); rvs would un-NAT it and
// then fail to route it (a SYN flood from a blackholed spoofed prefix: one SYN+ACK each).
// The kernel answers an unreachable / prohibit route with an ICMP error to the sender; this
// drops silently, as for a blackhole.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define RVS_FRAME_MAX (4096 - 256)

// An address with its protocol and port; IPv4 addresses as ::ffff:a.b.c.d.
struct rvs_key {
    __u8 addr[16];
    __u16 port; // network order
    __u8 proto;
    __u8 pad;
};

// VIP addresses (port 0, proto 0 in the key) -> 1.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct rvs_key);
    __type(value, __u8);
} rvs_vips SEC(".maps");

// NAT real servers (address, protocol or 0, port or 0) -> 1.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct rvs_key);
    __type(value, __u8);
} rvs_reals SEC(".maps");

// Interface index -> first XSKMAP slot of its queues (slot = base + rx queue).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} rvs_ifslots SEC(".maps");

// The AF_XDP sockets.
struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __u32);
} rvs_xsks SEC(".maps");

// Packets per CPU: [0] handed to rvs, [1] passed, [2] dropped (a real server's reply to a
// destination routed to a blackhole, unreachable or prohibit route).
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} rvs_counts SEC(".maps");

static __always_inline void count(__u32 i) {
    __u64 *c = bpf_map_lookup_elem(&rvs_counts, &i);
    if (c)
        *c += 1;
}

static __always_inline int pass(void) {
    count(1);
    return XDP_PASS;
}

static __always_inline int is_real(struct rvs_key *k) {
    if (bpf_map_lookup_elem(&rvs_reals, k))
        return 1;
    k->port = 0;
    if (bpf_map_lookup_elem(&rvs_reals, k))
        return 1;
    k->proto = 0;
    return bpf_map_lookup_elem(&rvs_reals, k) != 0;
}

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

// Whether the director routes `fib`'s destination (filled in by the caller) nowhere: a
// blackhole, unreachable or prohibit route.
static __always_inline int routed_nowhere(struct xdp_md *ctx, struct bpf_fib_lookup *fib) {
    fib->ifindex = ctx->ingress_ifindex;
    long r = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
    return r == BPF_FIB_LKUP_RET_BLACKHOLE || r == BPF_FIB_LKUP_RET_UNREACHABLE ||
           r == BPF_FIB_LKUP_RET_PROHIBIT;
}

SEC("xdp")
int rvs_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return pass();
    // An AF_XDP frame of rvs holds 4096 - 256 (the kernel's headroom) bytes.
    if (bpf_xdp_get_buff_len(ctx) > RVS_FRAME_MAX)
        return pass();
    struct rvs_key dst = {}, src = {};
    struct bpf_fib_lookup fib = {};
    __u8 proto;
    void *l4;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end)
            return pass();
        // Options, fragments, a TTL the forwarding would use up: the kernel's.
        if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1)
            return pass();
        dst.addr[10] = dst.addr[11] = 0xff;
        src.addr[10] = src.addr[11] = 0xff;
        __builtin_memcpy(&dst.addr[12], &ip->daddr, 4);
        __builtin_memcpy(&src.addr[12], &ip->saddr, 4);
        fib.family = AF_INET;
        fib.ipv4_dst = ip->daddr;
        proto = ip->protocol;
        l4 = ip + 1;
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return pass();
        if (ip6->hop_limit <= 1)
            return pass();
        __builtin_memcpy(dst.addr, &ip6->daddr, 16);
        __builtin_memcpy(src.addr, &ip6->saddr, 16);
        fib.family = AF_INET6;
        __builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
        // Extension headers (fragments among them): the kernel's.
        proto = ip6->nexthdr;
        l4 = ip6 + 1;
    } else {
        return pass();
    }
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
        return pass();
    // The ports are the first four bytes of all three.
    __u16 *ports = l4;
    if ((void *)(ports + 2) > end)
        return pass();
    int take = bpf_map_lookup_elem(&rvs_vips, &dst) != 0;
    if (!take) {
        src.proto = proto;
        src.port = ports[0];
        take = is_real(&src);
        if (take && routed_nowhere(ctx, &fib)) {
            count(2);
            return XDP_DROP;
        }
    }
    if (!take)
        return pass();
    __u32 ifindex = ctx->ingress_ifindex;
    __u32 *base = bpf_map_lookup_elem(&rvs_ifslots, &ifindex);
    if (!base)
        return pass();
    __u32 slot = *base + ctx->rx_queue_index;
    count(0);
    // No socket on this queue: the kernel's (the TUN path), not dropped.
    return bpf_redirect_map(&rvs_xsks, slot, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
