//! At most [`MAX_INBOUND_PER_SUBNET`] connections opened to this node from one subnet (the
//! subnets of `work.rs`: IPv4 /24, IPv6 /48).
//!
//! Why: a node holds at most `NetConfig::max_connections` connections (128), and identities cost
//! nothing, so one machine could open them all and leave no room for the homes and
//! coordinators this node works with. With the cap, filling a node's connections takes
//! addresses in 16 networks. A connection is refused before its handshake when its subnet
//! already holds its share (`handle_pending_inbound_connection`), so a refused one costs no
//! encryption. Connections this node dials are not counted (it chooses whom it dials), nor
//! those that came in through a relay (their address holds no IP; the relay's own limits and
//! `relayed.rs` bound them), nor loopback unless `NetConfig::limit_local_networks` says so; on
//! a private network each host counts on its own (`work::subnet_of`).
//!
//! A protocol-less behaviour, placed before every behaviour with a handler (`behaviour.rs`).
//! Must not touch: anything but its counts.

use std::collections::HashMap;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::work::{subnet_of, Subnet};

/// Connections peers opened to this node from one subnet, open at once. A household's
/// radiators behind one public address, or several households behind one carrier-grade NAT,
/// rarely need more than a few to one node.
pub const MAX_INBOUND_PER_SUBNET: usize = 8;

/// The cap, as a behaviour: counts open inbound connections by subnet.
pub(crate) struct InboundPerSubnet {
    limit_local: bool,
    open: HashMap<Subnet, usize>,
    /// The subnet each counted connection was counted under (at most `max_connections`).
    counted: HashMap<ConnectionId, Subnet>,
    /// Connections refused since start.
    pub(crate) refused: u64,
}

#[derive(Debug)]
struct SubnetFull(Subnet);

impl std::fmt::Display for SubnetFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} already holds {MAX_INBOUND_PER_SUBNET} connections to this node",
            self.0
        )
    }
}

impl std::error::Error for SubnetFull {}

impl InboundPerSubnet {
    pub(crate) fn new(limit_local: bool) -> InboundPerSubnet {
        InboundPerSubnet {
            limit_local,
            open: HashMap::new(),
            counted: HashMap::new(),
            refused: 0,
        }
    }

    /// The subnet a connection from `remote` counts under; `None`: not limited.
    fn subnet(&self, remote: &Multiaddr) -> Option<Subnet> {
        match subnet_of(remote, self.limit_local)? {
            Subnet::Unplaced => None,
            s => Some(s),
        }
    }

    fn admit(&mut self, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(s) = self.subnet(remote) else {
            return Ok(());
        };
        if self.open.get(&s).copied().unwrap_or(0) >= MAX_INBOUND_PER_SUBNET {
            self.refused += 1;
            tracing::debug!(%remote, "inbound connection refused: {}", SubnetFull(s));
            return Err(ConnectionDenied::new(SubnetFull(s)));
        }
        Ok(())
    }
}

impl NetworkBehaviour for InboundPerSubnet {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Others may have been established since this one was let through pending.
        self.admit(remote_addr)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if let ConnectedPoint::Listener { send_back_addr, .. } = e.endpoint {
                    if let Some(s) = self.subnet(send_back_addr) {
                        *self.open.entry(s).or_default() += 1;
                        self.counted.insert(e.connection_id, s);
                    }
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(s) = self.counted.remove(&connection_id) {
                    if let Some(n) = self.open.get_mut(&s) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.open.remove(&s);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_gets_its_share_of_inbound_connections() {
        let mut b = InboundPerSubnet::new(false);
        let crowd: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
        let endpoint = ConnectedPoint::Listener {
            local_addr: "/ip4/203.0.113.9/tcp/4001".parse().unwrap(),
            send_back_addr: crowd.clone(),
        };
        let established = |b: &mut InboundPerSubnet, i: usize| {
            b.on_swarm_event(FromSwarm::ConnectionEstablished(
                libp2p::swarm::behaviour::ConnectionEstablished {
                    peer_id: PeerId::random(),
                    connection_id: ConnectionId::new_unchecked(i),
                    endpoint: &endpoint,
                    failed_addresses: &[],
                    other_established: 0,
                },
            ))
        };
        for i in 0..MAX_INBOUND_PER_SUBNET {
            b.admit(&crowd).expect("room");
            established(&mut b, i);
        }
        assert!(b.admit(&crowd).is_err());
        assert!(b.admit(&"/ip4/203.0.113.1/tcp/1".parse().unwrap()).is_ok());
        // One closes: room for one more.
        b.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: ConnectionId::new_unchecked(0),
            endpoint: &endpoint,
            cause: None,
            remaining_established: 0,
        }));
        assert!(b.admit(&crowd).is_ok());
        // Loopback and relayed connections are not counted; a private host on its own.
        let relayed = format!("/p2p/{}", PeerId::random());
        for free in ["/ip4/127.0.0.1/tcp/1", &relayed] {
            assert!(b.subnet(&free.parse().unwrap()).is_none(), "{free}");
        }
        assert_ne!(
            b.subnet(&"/ip4/192.168.1.9/tcp/1".parse().unwrap()),
            b.subnet(&"/ip4/192.168.1.10/tcp/1".parse().unwrap())
        );
        assert_eq!(b.refused, 1);
    }
}
