# bench/lib/nftdnat.sh: the kernel's NAT peer of rvs on the namespace bed (sourced; bash):
# nftables DNAT to the bed's three real servers, round robin per new flow (conntrack NAT, as
# kube-proxy's nftables mode does). Used by bench/packet.sh and bench/synflood.sh.
#
#   nft_dnat_rules TABLE VIP [EXTRA]   the ruleset (an `nft -f` text): table ip TABLE with a
#                                      prerouting chain DNATing VIP to 10.112.0.11-13; EXTRA
#                                      (lines) goes into the table too (packet.sh: its maps).
#   nft_dnat_up NS TABLE VIP           ip_forward on and the ruleset loaded in namespace NS.
#   nft_dnat_down NS TABLE             the table deleted, ip_forward off.

nft_dnat_rules() { # TABLE VIP [EXTRA]
  cat <<NFT
table ip $1 {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $2 dnat to numgen inc mod 3 map { 0 : 10.112.0.11, 1 : 10.112.0.12, 2 : 10.112.0.13 }
  }
${3:-}
}
NFT
}

nft_dnat_up() { # NS TABLE VIP
  ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1
  nft_dnat_rules "$2" "$3" | ip netns exec "$1" nft -f -
}

nft_dnat_down() { # NS TABLE
  ip netns exec "$1" nft delete table ip "$2"
  ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=0
}
