//! The servers a job reaches on its own loopback, wired once for both backends: the archive
//! mirror on [`MIRROR_PORT`], the pinned base images on the port their references name, and
//! the run's egress (`src/egress`: the proxy on [`EGRESS_PROXY_PORT`], TLS on 443, HTTP
//! on 80, its resolver on UDP and TCP 53).
//! A backend hands over one listening socket per port of `Job::listen` (inside the job's
//! network namespace, or on the host behind a forward) and gets back every request the
//! servers answered when it stops them.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use crate::egress::{DnsListener, EGRESS_DNS_PORT, Egress, EgressListener};
use crate::error::Result;
use crate::inputs::images::{PinnedImage, PinnedImageServer};
use crate::inputs::lock::InputsLock;
use crate::inputs::mirror::{MIRROR_PORT, Mirror, MirrorConfig, MirrorHandle};
use crate::inputs::store::Store;

/// What a job may reach besides itself.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The archive mirror, on [`MIRROR_PORT`].
    pub mirror: Option<MirrorConfig>,
    /// Pinned base images (image steps), served read-only from `store`.
    pub images: Vec<PinnedImage>,
    pub store: Option<Store>,
    /// The run's egress (one CA and one record for all its jobs).
    pub egress: Option<Arc<Egress>>,
}

impl Services {
    /// Nothing: a job with loopback alone (`reprobox run`).
    pub fn none() -> Services {
        Services::default()
    }

    /// The ports a job must have listeners on for these services, in a fixed order.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        if self.mirror.is_some() {
            ports.push(MIRROR_PORT);
        }
        for p in self.images.iter().filter_map(|i| i.reference.port()) {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        if self.egress.is_some() {
            for p in Egress::ports() {
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
        }
        ports
    }

    /// The UDP ports a job must have sockets on (the egress's resolver), where the backend
    /// can give them (the container; the microVM forwards TCP only).
    pub fn udp_ports(&self) -> Vec<u16> {
        match &self.egress {
            Some(_) => Egress::udp_ports().to_vec(),
            None => Vec::new(),
        }
    }

    /// Serve on `listeners` (port the job uses, socket, and the address the job sees when
    /// it differs from the socket's own, as behind the microVM's forwards). The egress's
    /// ports serve the egress; a port that is not the mirror's serves the pinned images
    /// (one image server for all of them). `udp` are the sockets of [`Services::udp_ports`]
    /// the backend made (the resolver's, none on the microVM).
    pub fn start(
        &self,
        listeners: Vec<(u16, TcpListener, Option<SocketAddr>)>,
        udp: Vec<(u16, UdpSocket)>,
    ) -> Result<Serving> {
        let mut serving = Serving::default();
        let mut dns_udp = None;
        let mut dns_tcp = None;
        for (port, sock) in udp {
            if port == EGRESS_DNS_PORT && self.egress.is_some() {
                dns_udp = Some(sock);
            }
        }
        for (port, listener, shown) in listeners {
            if port == MIRROR_PORT
                && let Some(config) = &self.mirror
            {
                serving.mirror = Some(Mirror::serve(listener, config.clone())?);
            } else if port == EGRESS_DNS_PORT && self.egress.is_some() {
                dns_tcp = Some(listener);
            } else if let Some(egress) = &self.egress
                && Egress::ports().contains(&port)
            {
                serving
                    .egress
                    .push(EgressListener::serve(egress.clone(), port, listener)?);
            } else if serving.images.is_none()
                && !self.images.is_empty()
                && let Some(store) = &self.store
            {
                serving.images = Some(PinnedImageServer::serve_as(
                    listener,
                    store.clone(),
                    &self.images,
                    shown,
                )?);
            }
        }
        if let Some(egress) = &self.egress
            && (dns_udp.is_some() || dns_tcp.is_some())
        {
            serving.dns = Some(DnsListener::serve(egress.clone(), dns_udp, dns_tcp)?);
        }
        Ok(serving)
    }
}

/// Services being served for one job.
#[derive(Default)]
pub struct Serving {
    mirror: Option<MirrorHandle>,
    images: Option<PinnedImageServer>,
    egress: Vec<EgressListener>,
    dns: Option<DnsListener>,
}

impl Serving {
    /// Stop serving; every request answered, the mirror's first.
    pub fn stop(self) -> InputsLock {
        let mut lock = InputsLock::default();
        if let Some(m) = self.mirror {
            lock.entries.extend(m.stop().entries);
        }
        if let Some(r) = self.images {
            lock.entries.extend(r.stop().entries);
        }
        for e in self.egress {
            lock.entries.extend(e.stop().entries);
        }
        if let Some(d) = self.dns {
            d.stop();
        }
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_services_no_ports_and_the_mirror_comes_first() {
        assert!(Services::none().ports().is_empty());
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let s = Services {
            mirror: Some(MirrorConfig {
                store: store.clone(),
                upstream: "http://127.0.0.1:1".into(),
                canonical: None,
                offline: true,
            }),
            images: Vec::new(),
            store: Some(store.clone()),
            egress: None,
        };
        assert_eq!(s.ports(), vec![MIRROR_PORT]);
        let rule = crate::egress::EgressRule::parse("a.example=http://127.0.0.1:1").unwrap();
        let s = Services {
            egress: Some(Arc::new(Egress::new(vec![rule], store, true).unwrap())),
            ..s
        };
        assert_eq!(
            s.ports(),
            vec![MIRROR_PORT, crate::egress::EGRESS_PROXY_PORT, 443, 80, 53]
        );
        assert_eq!(s.udp_ports(), vec![53]);
    }
}
