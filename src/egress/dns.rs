//! The job's resolver: a tiny DNS responder on port 53 of the job's loopback (UDP and TCP,
//! like the egress's other listeners made inside the job's network namespace; the job's
//! `/etc/resolv.conf` is bound to name `127.0.0.1`). A mapped host's `A` query is answered
//! with 127.0.0.1, where its listeners are; any other type for a mapped host gets an empty
//! answer (the listeners are IPv4). `localhost` and the jobs' own host names are answered
//! the same way. Every other name is answered NXDOMAIN at once and the
//! lookup is recorded as a refusal (with its step), so a client that ignores `/etc/hosts`
//! and proxies (or a build that probes a name) is seen, and never waits on a timeout.
//!
//! The wire format is `simple-dns`'s; nothing here parses bytes by hand.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

use super::Egress;
use crate::error::{Error, IoContext, Result};
use crate::inputs::wake::{Accepting, Waker};

/// The resolver's port (UDP and TCP) on the job's loopback.
pub const EGRESS_DNS_PORT: u16 = 53;

/// How long the job may cache an answer: the names never change within a run.
const TTL: u32 = 60;

/// The reply to one query (None: not a query, nothing to answer); an unlisted name is
/// recorded as refused.
pub(super) fn answer(egress: &Egress, query: &[u8]) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    if q.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let mut reply = Packet::new_reply(q.id());
    *reply.opcode_mut() = q.opcode();
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    reply.questions = q.questions.clone();
    let question = match (q.opcode(), q.questions.as_slice()) {
        (OPCODE::StandardQuery, [one]) => one,
        (OPCODE::StandardQuery, _) => {
            *reply.rcode_mut() = RCODE::FormatError;
            return reply.build_bytes_vec().ok();
        }
        _ => {
            *reply.rcode_mut() = RCODE::NotImplemented;
            return reply.build_bytes_vec().ok();
        }
    };
    let name = question.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let internet = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    let mapped = internet && (egress.is_local_name(name) || egress.rule(name).is_some());
    if !mapped {
        *reply.rcode_mut() = RCODE::NameError;
        egress.refuse_lookup(name, &qtype_name(question.qtype));
        return reply.build_bytes_vec().ok();
    }
    if question.qtype == QTYPE::TYPE(TYPE::A) || question.qtype == QTYPE::ANY {
        reply.answers.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            TTL,
            RData::A(A {
                address: u32::from(Ipv4Addr::LOCALHOST),
            }),
        ));
    }
    reply.build_bytes_vec().ok()
}

/// `A`, `AAAA`, `TYPE65`… for the record.
fn qtype_name(t: QTYPE) -> String {
    match t {
        QTYPE::TYPE(TYPE::Unknown(n)) => format!("TYPE{n}"),
        QTYPE::TYPE(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    }
}

/// The responder serving one job: a UDP socket and a TCP listener, both on port 53.
pub(crate) struct DnsListener {
    udp: Option<(Arc<Waker>, JoinHandle<()>)>,
    tcp: Option<(Arc<Accepting>, JoinHandle<()>)>,
}

impl DnsListener {
    /// Serve the egress's names on `udp` and/or `tcp` until [`DnsListener::stop`].
    pub(crate) fn serve(
        egress: Arc<Egress>,
        udp: Option<UdpSocket>,
        tcp: Option<TcpListener>,
    ) -> Result<DnsListener> {
        let waker_err = |e| Error::io("create an eventfd for", "the egress's resolver", e);
        let spawn_err = |e| Error::io("spawn thread", "the egress's resolver", e);
        let mut me = DnsListener {
            udp: None,
            tcp: None,
        };
        if let Some(sock) = udp {
            sock.set_nonblocking(true)
                .ctx("configure socket", "the egress's resolver (udp)")?;
            let waker = Arc::new(Waker::new().map_err(waker_err)?);
            let (w, eg) = (waker.clone(), egress.clone());
            let h = std::thread::Builder::new()
                .name("egress-dns-udp".into())
                .spawn(move || udp_loop(&sock, &w, &eg))
                .map_err(spawn_err)?;
            me.udp = Some((waker, h));
        }
        if let Some(listener) = tcp {
            listener
                .set_nonblocking(false)
                .ctx("configure listener", "the egress's resolver (tcp)")?;
            let accepting = Arc::new(Accepting::new().map_err(waker_err)?);
            let a = accepting.clone();
            let h = std::thread::Builder::new()
                .name("egress-dns-tcp".into())
                .spawn(move || {
                    let a2 = a.clone();
                    a.run(
                        &listener,
                        "egress-dns-conn",
                        Arc::new(move |s| {
                            if let Err(e) = tcp_conn(s, &egress, &a2) {
                                tracing::debug!("egress: resolver connection: {e}");
                            }
                        }),
                    )
                })
                .map_err(spawn_err)?;
            me.tcp = Some((accepting, h));
        }
        Ok(me)
    }

    /// Stop answering (at once: the threads wait on an eventfd too).
    pub(crate) fn stop(self) {
        if let Some((w, h)) = self.udp {
            w.wake();
            let _ = h.join();
        }
        if let Some((a, h)) = self.tcp {
            a.stop(h);
        }
    }
}

fn udp_loop(sock: &UdpSocket, waker: &Waker, egress: &Egress) {
    let mut buf = [0u8; 4096];
    while waker.wait(sock.as_raw_fd()) {
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(reply) = answer(egress, &buf[..n])
                        && let Err(e) = sock.send_to(&reply, from)
                    {
                        tracing::debug!("egress: resolver reply to {from}: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("egress: resolver: {e}");
                    break;
                }
            }
        }
    }
}

/// DNS over TCP: each message behind its two-byte length, several per connection.
fn tcp_conn(mut s: TcpStream, egress: &Egress, accepting: &Accepting) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    // A connect to a raw address on 53 (a resolver named by address), as on the other
    // ports. Over UDP the socket is 127.0.0.1's alone: the kernel refuses the others.
    if let Some(addr) = super::server::raw_address(&s) {
        super::server::refuse_raw(egress, addr);
        return Ok(());
    }
    loop {
        let mut len = [0u8; 2];
        match s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && !accepting.stopping() =>
            {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg)?;
        let Some(reply) = answer(egress, &msg) else {
            return Ok(());
        };
        let n = u16::try_from(reply.len()).map_err(std::io::Error::other)?;
        s.write_all(&n.to_be_bytes())?;
        s.write_all(&reply)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::EgressRule;
    use crate::inputs::store::Store;
    use simple_dns::{Name, Question};

    fn query(name: &str, t: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            t.into(),
            CLASS::IN.into(),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn egress(t: &std::path::Path) -> Egress {
        let store = Store::open(t).unwrap();
        let r = EgressRule::parse("archive.archlinux.org=http://127.0.0.1:1").unwrap();
        Egress::new(vec![r], store, true).unwrap()
    }

    #[test]
    fn a_mapped_name_is_loopback_and_any_other_is_refused_and_recorded_with_its_step() {
        let t = tempfile::tempdir().unwrap();
        let eg = egress(t.path());
        eg.set_step(Some("make"));
        // The job's own name, once a job was prepared, is local, not refused.
        let mut job = crate::job::Job::new(
            crate::job::RootfsSource::Dir(t.path().into()),
            vec!["true".into()],
        );
        job.hostname = "builder".into();
        eg.prepare_job(&mut job, None).unwrap();
        let r = Packet::parse(&answer(&eg, &query("builder", TYPE::A)).unwrap())
            .unwrap()
            .answers
            .len();
        assert_eq!(r, 1);
        let bytes = answer(&eg, &query("Archive.ArchLinux.org", TYPE::A)).unwrap();
        let r = Packet::parse(&bytes).unwrap();
        assert_eq!((r.id(), r.rcode()), (7, RCODE::NoError));
        assert!(r.has_flags(PacketFlag::RESPONSE));
        let [rr] = r.answers.as_slice() else {
            panic!("{r:?}")
        };
        assert_eq!(
            rr.rdata,
            RData::A(A {
                address: 0x7f00_0001
            })
        );
        // No IPv6 listener: an empty answer, not an error.
        let r = answer(&eg, &query("archive.archlinux.org.", TYPE::AAAA)).unwrap();
        let r = Packet::parse(&r).unwrap();
        assert_eq!((r.rcode(), r.answers.len()), (RCODE::NoError, 0));
        assert!(eg.record().refusals.is_empty());

        for t in [TYPE::A, TYPE::AAAA, TYPE::A] {
            let r = answer(&eg, &query("unlisted.example", t)).unwrap();
            assert_eq!(Packet::parse(&r).unwrap().rcode(), RCODE::NameError);
        }
        let refusals = eg.record().refusals;
        // One per name and type and step: a resolver's retries are not listed again.
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        assert_eq!(refusals[0].host, "unlisted.example");
        assert_eq!(refusals[0].port, EGRESS_DNS_PORT);
        assert_eq!(refusals[0].what, "DNS lookup unlisted.example (A)");
        assert_eq!(refusals[1].what, "DNS lookup unlisted.example (AAAA)");
        assert_eq!(refusals[0].step.as_deref(), Some("make"));
        // A reply is never answered; garbage gets nothing.
        let mut reply = Packet::parse(&bytes).unwrap().into_reply();
        reply.set_flags(PacketFlag::RESPONSE);
        assert!(answer(&eg, &reply.build_bytes_vec().unwrap()).is_none());
        assert!(answer(&eg, b"\x00\x01").is_none());
    }

    #[test]
    fn both_transports_answer_and_stop_at_once() {
        let t = tempfile::tempdir().unwrap();
        let eg = Arc::new(egress(t.path()));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let (ua, ta) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let l = DnsListener::serve(eg.clone(), Some(udp), Some(tcp)).unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(&query("nowhere.example", TYPE::A), ua).unwrap();
        let mut buf = [0u8; 512];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(Packet::parse(&buf[..n]).unwrap().rcode(), RCODE::NameError);
        let mut s = TcpStream::connect(ta).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..2 {
            let q = query("archive.archlinux.org", TYPE::A);
            s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
            s.write_all(&q).unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut m = vec![0u8; u16::from_be_bytes(len).into()];
            s.read_exact(&mut m).unwrap();
            assert_eq!(Packet::parse(&m).unwrap().answers.len(), 1);
        }
        drop(s);
        l.stop();
        assert_eq!(eg.record().refusals.len(), 1);
    }
}
