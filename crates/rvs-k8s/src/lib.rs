//! rvs-k8s: a Kubernetes service proxy on rvs, with kube-proxy's IPVS-mode semantics
//! (reference: `kube-proxy-ipvs.md`).
//!
//! * [`plan`]: the pure derivation of the IPVS table and the ipset-equivalent sets from
//!   Services, EndpointSlices, the Node, the configuration and the node's addresses.
//! * [`config`]: `KubeProxyConfiguration` (v1alpha1) with kube-proxy's defaults and
//!   validation messages.
//! * [`objects`]: objects in the shapes `kubectl get -o json|yaml` prints.
//! * [`sets`]: the sets' names, types and member forms.
//! * [`drain`]: the desired table plus graceful termination against the table now.
//! * [`proxier`]: the object cache and the full and partial syncs to the daemon.
//! * [`run`]: `rvs k8s run` (kube-rs watchers, the bounded-frequency runner, healthz,
//!   metrics).
//! * [`hcport`]: the per-service health-check node ports (externalTrafficPolicy Local).
//! * [`fakeapi`]: a fake API server speaking the real list/watch wire format, for tests,
//!   the benchmark and trying `rvs k8s run` without a cluster.
//! * [`nft`]: the node plumbing (masquerade, source ranges, reject, stray traffic, no ARP
//!   for service IPs) as an nftables ruleset built from the sets.
//! * [`cli`]: `rvs k8s plan|sets|run|fake-apiserver`.

pub mod cli;
pub mod config;
pub mod drain;
pub mod duration;
pub mod fakeapi;
pub mod hcport;
pub mod net;
pub mod nft;
pub mod objects;
pub mod plan;
pub mod proxier;
pub mod run;
pub mod sets;

pub use cli::run;
