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
//! * [`cli`]: `rvs k8s plan`.

pub mod cli;
pub mod config;
pub mod drain;
pub mod duration;
pub mod net;
pub mod objects;
pub mod plan;
pub mod sets;

pub use cli::run;
