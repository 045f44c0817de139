//! Messages radiators exchange about jobs, receipts and heat: gossip payloads and the
//! request/response pairs of the control protocol. Pure data with canonical bytes; the
//! network layer moves them as opaque bytes and the jobs layer gives them meaning.
//! `docs/protocol.md` lists every schema and limit.
//!
//! Size: about 830 lines of code (every control request and response with its bounds, kept in
//! one place so the tags cannot collide); the rest are round-trip and bound tests.

use super::canon::{DecodeError, Reader, Writer};
use super::commit::Inclusion;
use super::receipt::{Claim, Receipt};

/// Version of the jobs protocol; a coordinator refuses leases to radiators of another version
/// because fuel counts and outputs are only comparable within one executor version.
pub const PROTOCOL_VERSION: u32 = 1;
/// Manifests up to this size ride inline in the announcement; larger ones are fetched as a
/// blob named by the job id.
pub const INLINE_MANIFEST_MAX: usize = 48 * 1024;
/// Longest human-readable reason carried in a message.
pub const MAX_REASON: usize = 512;

/// A job announcement, carried by [`Request::Announce`] to peers a coordinator chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobGossip {
    /// A job is open for work. The gossip author must be the manifest's submitter.
    Announce {
        job: blake3::Hash,
        manifest: Option<Vec<u8>>,
        /// When this announcement was made. Gossip message ids are content hashes, so a
        /// repeated announcement must differ from the last one to be forwarded at all.
        at_ms: u64,
    },
    /// The job is finished or cancelled: stop asking for leases.
    Closed { job: blake3::Hash, at_ms: u64 },
}

impl JobGossip {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            JobGossip::Announce {
                job,
                manifest,
                at_ms,
            } => {
                w.u8(1).hash(job);
                match manifest {
                    Some(m) => w.u8(1).bytes(m),
                    None => w.u8(0),
                };
                w.u64(*at_ms);
            }
            JobGossip::Closed { job, at_ms } => {
                w.u8(2).hash(job).u64(*at_ms);
            }
        }
        w.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<JobGossip, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.u8("job gossip")? {
            1 => {
                let job = r.hash("job id")?;
                let manifest = match r.u8("inline flag")? {
                    0 => None,
                    1 => Some(r.bytes(INLINE_MANIFEST_MAX, "inline manifest")?.to_vec()),
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "inline flag",
                            tag,
                        })
                    }
                };
                JobGossip::Announce {
                    job,
                    manifest,
                    at_ms: r.u64("time")?,
                }
            }
            2 => JobGossip::Closed {
                job: r.hash("job id")?,
                at_ms: r.u64("time")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "job gossip",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

/// How much heat a radiator wants right now, carried by [`Request::Heat`] to coordinators
/// that offered it work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeatDemand {
    /// Worker slots the radiator wants filled (0 = warm enough, no work wanted).
    pub wanted_slots: u16,
    /// Heat demand in thousandths (0 = none, 1000 = full power).
    pub demand_permille: u16,
    /// Room temperature in hundredths of a degree Celsius, if known.
    pub room_centi_c: Option<i32>,
    pub at_ms: u64,
}

impl HeatDemand {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1)
            .raw(&self.wanted_slots.to_le_bytes())
            .raw(&self.demand_permille.to_le_bytes());
        match self.room_centi_c {
            Some(t) => w.u8(1).raw(&t.to_le_bytes()),
            None => w.u8(0),
        };
        w.u64(self.at_ms);
        w.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<HeatDemand, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8("heat message")? != 1 {
            return Err(DecodeError::Invalid {
                what: "heat message",
                reason: "unknown kind".into(),
            });
        }
        let wanted_slots = u16::from_le_bytes(r.array("wanted slots")?);
        let demand_permille = u16::from_le_bytes(r.array("demand")?);
        if demand_permille > 1000 {
            return Err(DecodeError::Invalid {
                what: "heat message",
                reason: "demand above 1000 permille".into(),
            });
        }
        let room_centi_c = match r.u8("temperature flag")? {
            0 => None,
            1 => Some(i32::from_le_bytes(r.array("temperature")?)),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "temperature flag",
                    tag,
                })
            }
        };
        let at_ms = r.u64("time")?;
        r.finish()?;
        Ok(HeatDemand {
            wanted_slots,
            demand_permille,
            room_centi_c,
            at_ms,
        })
    }
}

/// Requests of the control protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A radiator asks a coordinator for one shard of a job.
    Lease {
        job: blake3::Hash,
        protocol: u32,
        /// The radiator's heat demand, 0..=1000; coordinators serve the coldest first.
        demand_permille: u16,
    },
    /// A radiator reports a finished shard.
    Claim(Claim),
    /// A coordinator hands a countersigned receipt to its worker, with the proof that the
    /// receipt is in one of the coordinator's signed commitments (`docs/receipts.md`).
    Receipt {
        receipt: Box<Receipt>,
        inclusion: Inclusion,
    },
    /// A radiator reports that a shard could not run (a trap, a limit): not an output.
    Failure {
        job: blake3::Hash,
        shard: u32,
        nonce: [u8; 16],
        reason: String,
    },
    /// A radiator will not work this job at all: it is beyond the radiator's own limits
    /// (memory, module or input size, module shape, compile time). The coordinator shows the
    /// reason to the submitter and the radiator stops asking for the job. (Tag 6; tag 5 is
    /// reserved for lease renewal.)
    Decline { job: blake3::Hash, reason: String },
    /// A radiator still running a shard asks to extend its lease. Tag 5.
    Renew {
        job: blake3::Hash,
        shard: u32,
        nonce: [u8; 16],
    },
    /// A coordinator offers work to a peer it chose (tag 7): job announcements go to a
    /// bounded number of connected peers, never to the whole network (`docs/protocol.md`,
    /// "How work and heat demand travel").
    Announce(JobGossip),
    /// A radiator tells a coordinator that offered it work how much heat it wants (tag 8).
    Heat(HeatDemand),
    /// A radiator that lost receipts (`hearth doctor --repair --from`) asks a coordinator for
    /// the receipts it countersigned crediting the asking household, in id order after
    /// `after`. Answered with [`Response::Receipts`]. Tag 9.
    Receipts { after: Option<blake3::Hash> },
    /// A node asks a peer for the fraud evidence the peer re-ran and confirmed itself, in key
    /// order after `after` (the 68-byte key: accused ‖ job ‖ shard, big-endian), so a node
    /// that joined after the evidence was gossiped still hears it (`docs/trust.md`).
    /// Answered with [`Response::Evidence`]. Tag 10.
    Evidence { after: Option<[u8; 68]> },
    /// A node asks a peer for the proofs it holds against keys it takes no work from
    /// (revocations and equivocation proofs, `node::revoked`), in key order after `after` (the
    /// 33-byte cursor: key ‖ kind), so a node that joined after they were gossiped refuses
    /// those keys too (`docs/protocol.md` §6.6). Answered with [`Response::Refusals`]. Tag 11.
    Refusals { after: Option<[u8; 33]> },
    /// A node about to seal its first receipt commitment since it started asks a bootstrap
    /// node for the last commitment its auditor's log holds of the asker's own key (the key of
    /// the connection's peer id: no other key can be asked about), so that a node whose data
    /// directory was restored from an old backup numbers on past what it already published
    /// instead of signing a number twice (`node::auditors`). Answered with
    /// [`Response::LastCommitment`], or `Error` by a node that keeps no log. Tag 12.
    LastCommitment,
    /// A radiator hands a bootstrap node a commitment one of its receipts came in, signed by
    /// that receipt's coordinator, so the auditor logs it even if the coordinator never
    /// published it, and finds it out if it signed another body under that number
    /// (`node::auditors`). Answered with [`Response::Noted`], or `Error`. Tag 13.
    Witness(Box<super::commit::Commitment>),
    /// A node tells a bootstrap node that its key runs as instance `id` (16 random bytes
    /// chosen at each start) and asks for the key's lease: one instance at a time seals
    /// receipt commitments (`node::instances`). Asked at start and every `NUMBERING_CHECK`;
    /// `leaving` gives the lease back as the node stops. Answered with
    /// [`Response::Instance`] (`Noted` when leaving), or `Error` by a node that keeps no
    /// leases. Tag 14.
    Instance { id: [u8; 16], leaving: bool },
    /// A node asks a peer for the households' key events it heard (`node::key_log`), in the
    /// order of its `key-events` tree after `after` (the 41-byte cursor: household ‖ kind ‖
    /// number, big-endian), so a node that joined after they were gossiped refuses the keys
    /// they retire at once (`docs/protocol.md` §6.7). Answered with [`Response::KeyEvents`].
    /// Tag 15.
    KeyEvents { after: Option<[u8; 41]> },
}

/// A bootstrap node's answer to [`Request::Instance`]: whether the asking instance holds its
/// key's lease. Durations are whole seconds since that instance was last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceLease {
    /// The asker holds the lease; `contender`: another instance of the key that asked within
    /// the lease, and how long ago.
    Granted { contender: Option<([u8; 16], u32)> },
    /// Another instance of the key holds the lease.
    HeldBy { id: [u8; 16], ago_s: u32 },
}

/// Most proofs in one [`Response::Refusals`]: as many of the longest (an equivocation proof)
/// as fit [`MAX_CONTROL_MESSAGE`] with their 4-byte lengths, after a 3-byte header.
pub const MAX_REFUSALS_PER_ANSWER: usize = 12;
const _: () = assert!(
    3 + MAX_REFUSALS_PER_ANSWER * (4 + super::equivocate::EQUIVOCATION_LEN) <= MAX_CONTROL_MESSAGE
);

/// Most key events in one [`Response::KeyEvents`]: 16 × 181 bytes after a 44-byte header.
pub const MAX_KEY_EVENTS_PER_ANSWER: usize = 16;
const _: () =
    assert!(3 + 41 + MAX_KEY_EVENTS_PER_ANSWER * super::rotate::EVENT_LEN <= MAX_CONTROL_MESSAGE);

/// Most pieces of evidence in one [`Response::Evidence`]: as many as fit
/// [`MAX_CONTROL_MESSAGE`] (a piece is `EVIDENCE_LEN` bytes plus its 4-byte length, after a
/// 3-byte header).
pub const MAX_EVIDENCE_PER_ANSWER: usize = 4;
const _: () = assert!(
    3 + MAX_EVIDENCE_PER_ANSWER * (4 + super::evidence::EVIDENCE_LEN) <= MAX_CONTROL_MESSAGE
);

/// Most receipts in one [`Response::Receipts`]: as many as fit [`MAX_CONTROL_MESSAGE`] (a
/// receipt is `RECEIPT_LEN` bytes plus its 4-byte length, after a 3-byte header).
pub const MAX_RECEIPTS_PER_ANSWER: usize = 10;
const _: () =
    assert!(3 + MAX_RECEIPTS_PER_ANSWER * (4 + super::receipt::RECEIPT_LEN) <= MAX_CONTROL_MESSAGE);

/// Why a coordinator gives no work: always said, never silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// This coordinator does not know the job (or forgot it).
    UnknownJob,
    /// Every shard is verified.
    JobComplete,
    /// Every open shard is leased or already worked by this household; ask again later.
    NothingFree,
    /// This household's claims lost a vote here; it gets no more leases from this coordinator.
    Excluded,
    /// The radiator runs another protocol version.
    VersionMismatch,
    /// The coordinator is shutting down or overloaded.
    Busy,
}

impl DenyReason {
    fn tag(self) -> u8 {
        match self {
            DenyReason::UnknownJob => 1,
            DenyReason::JobComplete => 2,
            DenyReason::NothingFree => 3,
            DenyReason::Excluded => 4,
            DenyReason::VersionMismatch => 5,
            DenyReason::Busy => 6,
        }
    }
    fn from_tag(tag: u8) -> Result<DenyReason, DecodeError> {
        Ok(match tag {
            1 => DenyReason::UnknownJob,
            2 => DenyReason::JobComplete,
            3 => DenyReason::NothingFree,
            4 => DenyReason::Excluded,
            5 => DenyReason::VersionMismatch,
            6 => DenyReason::Busy,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "deny reason",
                    tag,
                })
            }
        })
    }
}

/// A lease: permission to run one replica of one shard until the deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: blake3::Hash,
    pub shard: u32,
    pub nonce: [u8; 16],
    /// Milliseconds since the Unix epoch (coordinator's clock) after which the lease is void.
    pub deadline_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Leased(Lease),
    Denied {
        reason: DenyReason,
        /// When asking again makes sense, in milliseconds (0 = do not ask again).
        retry_after_ms: u64,
        detail: String,
    },
    /// The claim was recorded; `verified` says whether its shard is now verified.
    ClaimAccepted {
        verified: bool,
    },
    ClaimRejected {
        detail: String,
    },
    ReceiptStored,
    FailureNoted,
    /// The request could not be understood or served.
    Error {
        detail: String,
    },
    /// The lease was extended to this deadline (coordinator's clock). Tag 8.
    Renewed {
        deadline_ms: u64,
    },
    /// An announcement or a heat demand was taken note of. Tag 9.
    Noted,
    /// Receipts answering [`Request::Receipts`], at most [`MAX_RECEIPTS_PER_ANSWER`], in id
    /// order; `more` says whether to ask again after the last one. Tag 10.
    Receipts {
        receipts: Vec<Receipt>,
        more: bool,
    },
    /// Fraud evidence answering [`Request::Evidence`], at most [`MAX_EVIDENCE_PER_ANSWER`],
    /// in key order; `more` says whether to ask again after the last one. Decoded, not
    /// checked: the asker checks each piece as if it came from gossip. Tag 11.
    Evidence {
        evidence: Vec<super::evidence::Evidence>,
        more: bool,
    },
    /// Proofs answering [`Request::Refusals`], at most [`MAX_REFUSALS_PER_ANSWER`], each a
    /// revocation or an equivocation proof in its signed bytes, in key order; `more` says
    /// whether to ask again after the last one. Not decoded: the asker checks each as if it
    /// came from gossip. Tag 12.
    Refusals {
        proofs: Vec<Vec<u8>>,
        more: bool,
    },
    /// The commitment with the highest number this auditor logged of the asker's key, as it
    /// was signed (the first body heard for that number), or none. Decoded, not checked: the
    /// asker checks that it is its own signature before it numbers on from it. Tag 13.
    LastCommitment(Option<Box<super::commit::Commitment>>),
    /// Whether the asking instance holds its key's lease ([`Request::Instance`]). Tag 14.
    Instance(InstanceLease),
    /// Key events answering [`Request::KeyEvents`], at most [`MAX_KEY_EVENTS_PER_ANSWER`],
    /// and the cursor to ask on from (none: no more). Decoded, not checked: the asker checks
    /// each as if it came from gossip. Tag 15.
    KeyEvents {
        events: Vec<super::rotate::KeyEvent>,
        next: Option<[u8; 41]>,
    },
}

fn reason_text(s: &str) -> &str {
    // Cut at a char boundary so an over-long reason still encodes within the bound.
    let mut end = s.len().min(MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Largest control message in either direction.
pub const MAX_CONTROL_MESSAGE: usize = 4096;
/// Largest encoded inclusion proof: magic, version, commitment, index, path length and
/// [`super::commit::MAX_PATH`] hashes.
pub const MAX_INCLUSION: usize =
    4 + 1 + super::commit::COMMITMENT_LEN + 4 + 1 + 32 * super::commit::MAX_PATH;

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Lease {
                job,
                protocol,
                demand_permille,
            } => {
                w.u8(1)
                    .hash(job)
                    .u32(*protocol)
                    .raw(&demand_permille.to_le_bytes());
            }
            Request::Claim(c) => {
                w.u8(2).bytes(&c.to_bytes());
            }
            Request::Receipt { receipt, inclusion } => {
                w.u8(3)
                    .bytes(&receipt.to_bytes())
                    .bytes(&inclusion.to_bytes());
            }
            Request::Failure {
                job,
                shard,
                nonce,
                reason,
            } => {
                w.u8(4)
                    .hash(job)
                    .u32(*shard)
                    .raw(nonce)
                    .str(reason_text(reason));
            }
            Request::Decline { job, reason } => {
                w.u8(6).hash(job).str(reason_text(reason));
            }
            Request::Renew { job, shard, nonce } => {
                w.u8(5).hash(job).u32(*shard).raw(nonce);
            }
            Request::Announce(g) => {
                w.u8(7).bytes(&g.to_bytes());
            }
            Request::Heat(h) => {
                w.u8(8).bytes(&h.to_bytes());
            }
            Request::Receipts { after } => {
                w.u8(9);
                match after {
                    Some(h) => w.u8(1).hash(h),
                    None => w.u8(0),
                };
            }
            Request::Evidence { after } => {
                w.u8(10);
                match after {
                    Some(k) => w.u8(1).raw(k),
                    None => w.u8(0),
                };
            }
            Request::Refusals { after } => {
                w.u8(11);
                match after {
                    Some(k) => w.u8(1).raw(k),
                    None => w.u8(0),
                };
            }
            Request::LastCommitment => {
                w.u8(12);
            }
            Request::Witness(c) => {
                w.u8(13).raw(&c.to_bytes());
            }
            Request::Instance { id, leaving } => {
                w.u8(14).raw(id).u8(u8::from(*leaving));
            }
            Request::KeyEvents { after } => {
                w.u8(15);
                match after {
                    Some(k) => w.u8(1).raw(k),
                    None => w.u8(0),
                };
            }
        }
        w.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let req = match r.u8("request")? {
            1 => Request::Lease {
                job: r.hash("job id")?,
                protocol: r.u32("protocol version")?,
                demand_permille: match u16::from_le_bytes(r.array("demand")?) {
                    // Refused rather than clamped: one request, one encoding (a clamp made
                    // 64 536 byte strings mean "1000"). Our workers never send more.
                    d if d > 1000 => {
                        return Err(DecodeError::Invalid {
                            what: "lease request",
                            reason: "demand above 1000 permille".into(),
                        })
                    }
                    d => d,
                },
            },
            2 => Request::Claim(Claim::from_bytes(r.bytes(1024, "claim")?)?),
            3 => Request::Receipt {
                receipt: Box::new(Receipt::from_bytes(r.bytes(1024, "receipt")?)?),
                inclusion: Inclusion::from_bytes(r.bytes(MAX_INCLUSION, "inclusion proof")?)?,
            },
            4 => Request::Failure {
                job: r.hash("job id")?,
                shard: r.u32("shard")?,
                nonce: r.array("nonce")?,
                reason: r.str(MAX_REASON, "reason")?.to_string(),
            },
            6 => Request::Decline {
                job: r.hash("job id")?,
                reason: r.str(MAX_REASON, "reason")?.to_string(),
            },
            5 => Request::Renew {
                job: r.hash("job id")?,
                shard: r.u32("shard")?,
                nonce: r.array("nonce")?,
            },
            7 => Request::Announce(JobGossip::from_bytes(
                r.bytes(INLINE_MANIFEST_MAX + 64, "announcement")?,
            )?),
            8 => Request::Heat(HeatDemand::from_bytes(r.bytes(64, "heat demand")?)?),
            9 => Request::Receipts {
                after: match r.u8("cursor flag")? {
                    0 => None,
                    1 => Some(r.hash("cursor")?),
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "cursor flag",
                            tag,
                        })
                    }
                },
            },
            10 => Request::Evidence {
                after: cursor(&mut r)?,
            },
            11 => Request::Refusals {
                after: cursor(&mut r)?,
            },
            12 => Request::LastCommitment,
            13 => {
                let bytes: [u8; super::commit::COMMITMENT_LEN] = r.array("commitment")?;
                Request::Witness(Box::new(super::commit::Commitment::from_bytes(&bytes)?))
            }
            14 => Request::Instance {
                id: r.array("instance id")?,
                leaving: r.flag("leaving flag")?,
            },
            15 => Request::KeyEvents {
                after: cursor(&mut r)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "request",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Response::Leased(l) => {
                w.u8(1)
                    .hash(&l.job)
                    .u32(l.shard)
                    .raw(&l.nonce)
                    .u64(l.deadline_ms);
            }
            Response::Denied {
                reason,
                retry_after_ms,
                detail,
            } => {
                w.u8(2)
                    .u8(reason.tag())
                    .u64(*retry_after_ms)
                    .str(reason_text(detail));
            }
            Response::ClaimAccepted { verified } => {
                w.u8(3).u8(u8::from(*verified));
            }
            Response::ClaimRejected { detail } => {
                w.u8(4).str(reason_text(detail));
            }
            Response::ReceiptStored => {
                w.u8(5);
            }
            Response::FailureNoted => {
                w.u8(6);
            }
            Response::Error { detail } => {
                w.u8(7).str(reason_text(detail));
            }
            Response::Renewed { deadline_ms } => {
                w.u8(8).u64(*deadline_ms);
            }
            Response::Noted => {
                w.u8(9);
            }
            Response::Receipts { receipts, more } => {
                // Callers never put more than the bound in; the count is a byte either way.
                let n = receipts.len().min(MAX_RECEIPTS_PER_ANSWER);
                w.u8(10).u8(u8::from(*more)).u8(n as u8);
                for receipt in &receipts[..n] {
                    w.bytes(&receipt.to_bytes());
                }
            }
            Response::Evidence { evidence, more } => {
                let n = evidence.len().min(MAX_EVIDENCE_PER_ANSWER);
                w.u8(11).u8(u8::from(*more)).u8(n as u8);
                for e in &evidence[..n] {
                    w.bytes(&e.to_bytes());
                }
            }
            Response::Refusals { proofs, more } => {
                let n = proofs.len().min(MAX_REFUSALS_PER_ANSWER);
                w.u8(12).u8(u8::from(*more)).u8(n as u8);
                for p in &proofs[..n] {
                    w.bytes(p);
                }
            }
            Response::LastCommitment(c) => {
                w.u8(13);
                match c {
                    Some(c) => w.u8(1).raw(&c.to_bytes()),
                    None => w.u8(0),
                };
            }
            Response::Instance(InstanceLease::Granted { contender }) => {
                w.u8(14).u8(1);
                match contender {
                    Some((id, ago_s)) => w.u8(1).raw(id).u32(*ago_s),
                    None => w.u8(0),
                };
            }
            Response::Instance(InstanceLease::HeldBy { id, ago_s }) => {
                w.u8(14).u8(2).raw(id).u32(*ago_s);
            }
            Response::KeyEvents { events, next } => {
                w.u8(15);
                match next {
                    Some(k) => w.u8(1).raw(k),
                    None => w.u8(0),
                };
                let n = events.len().min(MAX_KEY_EVENTS_PER_ANSWER);
                w.u8(n as u8);
                for e in &events[..n] {
                    w.raw(&e.to_bytes());
                }
            }
        }
        w.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let resp = match r.u8("response")? {
            1 => Response::Leased(Lease {
                job: r.hash("job id")?,
                shard: r.u32("shard")?,
                nonce: r.array("nonce")?,
                deadline_ms: r.u64("deadline")?,
            }),
            2 => Response::Denied {
                reason: DenyReason::from_tag(r.u8("deny reason")?)?,
                retry_after_ms: r.u64("retry after")?,
                detail: r.str(MAX_REASON, "detail")?.to_string(),
            },
            3 => Response::ClaimAccepted {
                // Any other byte would be a second encoding of `true`.
                verified: r.flag("verified flag")?,
            },
            4 => Response::ClaimRejected {
                detail: r.str(MAX_REASON, "detail")?.to_string(),
            },
            5 => Response::ReceiptStored,
            6 => Response::FailureNoted,
            7 => Response::Error {
                detail: r.str(MAX_REASON, "detail")?.to_string(),
            },
            8 => Response::Renewed {
                deadline_ms: r.u64("deadline")?,
            },
            9 => Response::Noted,
            10 => {
                let (more, n) = page_header(&mut r, "receipts answer", MAX_RECEIPTS_PER_ANSWER)?;
                let mut receipts = Vec::with_capacity(n);
                for _ in 0..n {
                    receipts.push(Receipt::from_bytes(r.bytes(1024, "receipt")?)?);
                }
                Response::Receipts { receipts, more }
            }
            11 => {
                let (more, n) = page_header(&mut r, "evidence answer", MAX_EVIDENCE_PER_ANSWER)?;
                let mut evidence = Vec::with_capacity(n);
                for _ in 0..n {
                    let bytes = r.bytes(super::evidence::EVIDENCE_LEN, "evidence")?;
                    evidence.push(super::evidence::Evidence::from_bytes(bytes).map_err(|e| {
                        DecodeError::Invalid {
                            what: "evidence",
                            reason: e.to_string(),
                        }
                    })?);
                }
                Response::Evidence { evidence, more }
            }
            12 => {
                let (more, n) = page_header(&mut r, "refusals answer", MAX_REFUSALS_PER_ANSWER)?;
                let mut proofs = Vec::with_capacity(n);
                for _ in 0..n {
                    let max = super::equivocate::EQUIVOCATION_LEN;
                    proofs.push(r.bytes(max, "refusal proof")?.to_vec());
                }
                Response::Refusals { proofs, more }
            }
            13 => Response::LastCommitment(match r.flag("commitment flag")? {
                true => {
                    let bytes: [u8; super::commit::COMMITMENT_LEN] = r.array("commitment")?;
                    Some(Box::new(super::commit::Commitment::from_bytes(&bytes)?))
                }
                false => None,
            }),
            14 => Response::Instance(match r.u8("lease verdict")? {
                1 => InstanceLease::Granted {
                    contender: match r.flag("contender flag")? {
                        true => Some((r.array("instance id")?, r.u32("age")?)),
                        false => None,
                    },
                },
                2 => InstanceLease::HeldBy {
                    id: r.array("instance id")?,
                    ago_s: r.u32("age")?,
                },
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "lease verdict",
                        tag,
                    })
                }
            }),
            15 => {
                let next = cursor(&mut r)?;
                let n = usize::from(r.u8("item count")?);
                if n > MAX_KEY_EVENTS_PER_ANSWER {
                    return Err(DecodeError::Invalid {
                        what: "key events answer",
                        reason: format!("{n} items, more than {MAX_KEY_EVENTS_PER_ANSWER}"),
                    });
                }
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    let bytes: [u8; super::rotate::EVENT_LEN] = r.array("key event")?;
                    events.push(super::rotate::KeyEvent::from_bytes(&bytes)?);
                }
                Response::KeyEvents { events, next }
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "response",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(resp)
    }
}

/// An optional fixed-length cursor: a flag byte (0 none, 1 some) and, if some, its bytes.
fn cursor<const N: usize>(r: &mut Reader<'_>) -> Result<Option<[u8; N]>, DecodeError> {
    Ok(match r.flag("cursor flag")? {
        true => Some(r.array("cursor")?),
        false => None,
    })
}

/// The head of a paged answer (receipts, evidence): the "more" flag (0 or 1) and the count of
/// items that follow. The count is a claim by the peer: refused above `max` before any item
/// is read.
fn page_header(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
) -> Result<(bool, usize), DecodeError> {
    let more = r.flag("more flag")?;
    let n = usize::from(r.u8("item count")?);
    if n > max {
        return Err(DecodeError::Invalid {
            what,
            reason: format!("{n} items, more than {max}"),
        });
    }
    Ok((more, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let job = blake3::hash(b"j");
        for g in [
            JobGossip::Announce {
                job,
                manifest: Some(vec![1, 2, 3]),
                at_ms: 1,
            },
            JobGossip::Announce {
                job,
                manifest: None,
                at_ms: 2,
            },
            JobGossip::Closed { job, at_ms: 3 },
        ] {
            assert_eq!(JobGossip::from_bytes(&g.to_bytes()).unwrap(), g);
        }
        let h = HeatDemand {
            wanted_slots: 2,
            demand_permille: 500,
            room_centi_c: Some(-150),
            at_ms: 5,
        };
        assert_eq!(HeatDemand::from_bytes(&h.to_bytes()).unwrap(), h);
        for req in [
            Request::Lease {
                job,
                protocol: 1,
                demand_permille: 999,
            },
            Request::Failure {
                job,
                shard: 2,
                nonce: [3; 16],
                reason: "out of fuel".into(),
            },
            Request::Decline {
                job,
                reason: "the job asks for 4096 MiB of memory per shard; this radiator allows 1024"
                    .into(),
            },
            Request::Renew {
                job,
                shard: 9,
                nonce: [7; 16],
            },
            Request::Announce(JobGossip::Closed { job, at_ms: 4 }),
            Request::Heat(h),
        ] {
            assert_eq!(Request::from_bytes(&req.to_bytes()).unwrap(), req);
        }
        for resp in [
            Response::Leased(Lease {
                job,
                shard: 4,
                nonce: [1; 16],
                deadline_ms: 77,
            }),
            Response::Denied {
                reason: DenyReason::Excluded,
                retry_after_ms: 0,
                detail: "x".repeat(2000),
            },
            Response::ClaimAccepted { verified: true },
            Response::ReceiptStored,
            Response::FailureNoted,
            Response::Renewed {
                deadline_ms: u64::MAX,
            },
            Response::Noted,
        ] {
            let back = Response::from_bytes(&resp.to_bytes()).unwrap();
            if let Response::Denied { detail, .. } = &back {
                assert_eq!(detail.len(), MAX_REASON);
            } else {
                assert_eq!(back, resp);
            }
        }
    }

    #[test]
    fn decline_has_tag_6_and_a_bounded_reason() {
        let job = blake3::hash(b"j");
        let bytes = Request::Decline {
            job,
            reason: "é".repeat(MAX_REASON),
        }
        .to_bytes();
        assert_eq!(bytes[0], 6);
        match Request::from_bytes(&bytes).unwrap() {
            Request::Decline { job: j, reason } => {
                assert_eq!(j, job);
                assert!(reason.len() <= MAX_REASON && reason.starts_with('é'));
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    /// The layouts `docs/protocol.md` states for the evidence exchange: request tag 10 (a
    /// cursor flag and, if set, the 68-byte key), response tag 11 (more flag, count, then
    /// each piece as `bytes` of exactly 813); more than 4 pieces are refused before any is
    /// read.
    #[test]
    fn evidence_exchange_layout() {
        let none = Request::Evidence { after: None }.to_bytes();
        assert_eq!(none, vec![10, 0]);
        let key = [7u8; 68];
        let some = Request::Evidence { after: Some(key) }.to_bytes();
        assert_eq!(some.len(), 2 + 68);
        assert_eq!(&some[..2], &[10, 1]);
        for req in [
            Request::Evidence { after: None },
            Request::Evidence { after: Some(key) },
        ] {
            assert_eq!(Request::from_bytes(&req.to_bytes()).unwrap(), req);
        }
        assert!(Request::from_bytes(&[10, 2]).is_err());
        assert!(Request::from_bytes(&[10, 1, 0]).is_err());
        let (_, e) = crate::model::evidence::tests::sample();
        let resp = Response::Evidence {
            evidence: vec![e.clone(), e.clone()],
            more: true,
        };
        let bytes = resp.to_bytes();
        assert_eq!(bytes.len(), 3 + 2 * (4 + 813));
        assert_eq!(&bytes[..3], &[11, 1, 2]);
        assert_eq!(&bytes[3..7], &813u32.to_le_bytes());
        assert_eq!(Response::from_bytes(&bytes).unwrap(), resp);
        let mut too_many = vec![11, 0, 5];
        too_many.extend(std::iter::repeat_n(0u8, 5 * (4 + 813)));
        assert!(Response::from_bytes(&too_many).is_err());
        let mut broken = bytes.clone();
        broken[7] ^= 1;
        assert!(Response::from_bytes(&broken).is_err(), "magic flipped");
        let full = Response::Evidence {
            evidence: vec![e; MAX_EVIDENCE_PER_ANSWER],
            more: false,
        };
        assert!(full.to_bytes().len() <= MAX_CONTROL_MESSAGE);
    }

    #[test]
    fn refusals_requests_and_pages_round_trip_and_bound_what_a_peer_sends() {
        let cursor = [3u8; 33];
        for req in [
            Request::Refusals { after: None },
            Request::Refusals {
                after: Some(cursor),
            },
        ] {
            assert_eq!(Request::from_bytes(&req.to_bytes()).unwrap(), req);
        }
        assert_eq!(Request::Refusals { after: None }.to_bytes(), vec![11, 0]);
        assert!(Request::from_bytes(&[11, 1, 0]).is_err(), "a cut cursor");
        let longest = vec![9u8; crate::model::equivocate::EQUIVOCATION_LEN];
        let full = Response::Refusals {
            proofs: vec![longest.clone(); MAX_REFUSALS_PER_ANSWER],
            more: true,
        };
        let bytes = full.to_bytes();
        assert!(bytes.len() <= MAX_CONTROL_MESSAGE);
        assert_eq!(Response::from_bytes(&bytes).unwrap(), full);
        // More proofs than a page holds, or one longer than any proof: refused.
        let mut too_many = vec![12, 0, MAX_REFUSALS_PER_ANSWER as u8 + 1];
        too_many.extend(std::iter::repeat_n(0u8, 4));
        assert!(Response::from_bytes(&too_many).is_err());
        let mut too_long = vec![12, 0, 1];
        too_long.extend_from_slice(&(longest.len() as u32 + 1).to_le_bytes());
        too_long.extend(std::iter::repeat_n(0u8, longest.len() + 1));
        assert!(Response::from_bytes(&too_long).is_err());
    }

    /// The layouts `docs/protocol.md` §6.7 states for pulling key events: request tag 15 (a
    /// cursor flag and, if 1, the 41-byte cursor); response tag 15 (the next cursor the same
    /// way, a count, then each 181-byte event). More events than a page holds, a cut event or
    /// bytes that are not a key event are refused.
    #[test]
    fn key_event_pulls_round_trip_and_bound_what_a_peer_sends() {
        for req in [
            Request::KeyEvents { after: None },
            Request::KeyEvents {
                after: Some([4u8; 41]),
            },
        ] {
            assert_eq!(Request::from_bytes(&req.to_bytes()).unwrap(), req);
        }
        assert_eq!(Request::KeyEvents { after: None }.to_bytes(), vec![15, 0]);
        assert!(Request::from_bytes(&[15, 1, 0]).is_err(), "a cut cursor");
        let who = crate::identity::Identity::generate();
        let next = crate::identity::Identity::generate().public();
        let e = super::super::rotate::KeyEvent::sign(who.public(), 0, &who, &next, 5);
        let full = Response::KeyEvents {
            events: vec![e.clone(); MAX_KEY_EVENTS_PER_ANSWER],
            next: Some([1u8; 41]),
        };
        let bytes = full.to_bytes();
        assert!(bytes.len() <= MAX_CONTROL_MESSAGE);
        assert_eq!(&bytes[..2], &[15, 1]);
        assert_eq!(bytes[43], MAX_KEY_EVENTS_PER_ANSWER as u8);
        assert_eq!(&bytes[44..44 + e.to_bytes().len()], &e.to_bytes()[..]);
        assert_eq!(Response::from_bytes(&bytes).unwrap(), full);
        let last = Response::KeyEvents {
            events: vec![e.clone()],
            next: None,
        };
        assert_eq!(Response::from_bytes(&last.to_bytes()).unwrap(), last);
        let mut too_many = vec![15, 0, MAX_KEY_EVENTS_PER_ANSWER as u8 + 1];
        too_many.extend(std::iter::repeat_n(0u8, 181));
        assert!(Response::from_bytes(&too_many).is_err());
        let mut cut = last.to_bytes();
        cut.pop();
        assert!(Response::from_bytes(&cut).is_err());
        let mut not_an_event = last.to_bytes();
        not_an_event[3] = b'X';
        assert!(Response::from_bytes(&not_an_event).is_err());
    }

    /// The layouts `docs/protocol.md` states for asking an auditor where a key's numbering
    /// stands: request tag 12 (nothing else), response tag 13 (a flag and, if 1, the 161-byte
    /// signed commitment); and for handing it a commitment as its witness: request tag 13
    /// (the 161 bytes). Anything else is refused: another flag, a cut or padded commitment,
    /// one whose bytes do not decode.
    #[test]
    fn last_commitment_layout() {
        assert_eq!(Request::LastCommitment.to_bytes(), vec![12]);
        assert_eq!(Request::from_bytes(&[12]).unwrap(), Request::LastCommitment);
        assert!(Request::from_bytes(&[12, 0]).is_err(), "trailing bytes");
        let who = crate::identity::Identity::generate();
        let (c, _) =
            super::super::commit::Commitment::seal(&who, 7, &[blake3::hash(b"r")], 1, 2).unwrap();
        let some = Response::LastCommitment(Some(Box::new(c.clone())));
        let bytes = some.to_bytes();
        assert_eq!(bytes.len(), 2 + super::super::commit::COMMITMENT_LEN);
        assert_eq!(&bytes[..2], &[13, 1]);
        assert_eq!(&bytes[2..], &c.to_bytes()[..]);
        assert_eq!(Response::from_bytes(&bytes).unwrap(), some);
        assert_eq!(Response::LastCommitment(None).to_bytes(), vec![13, 0]);
        assert_eq!(
            Response::from_bytes(&[13, 0]).unwrap(),
            Response::LastCommitment(None)
        );
        assert!(Response::from_bytes(&[13, 2]).is_err(), "another flag");
        assert!(
            Response::from_bytes(&bytes[..bytes.len() - 1]).is_err(),
            "cut"
        );
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Response::from_bytes(&padded).is_err(), "padded");
        let mut bad_magic = bytes.clone();
        bad_magic[2] ^= 1;
        assert!(
            Response::from_bytes(&bad_magic).is_err(),
            "not a commitment"
        );

        // A witness: tag 13 and the 161 signed bytes, nothing else.
        let witness = Request::Witness(Box::new(c.clone()));
        let bytes = witness.to_bytes();
        assert_eq!(bytes[0], 13);
        assert_eq!(&bytes[1..], &c.to_bytes()[..]);
        assert_eq!(Request::from_bytes(&bytes).unwrap(), witness);
        assert!(
            Request::from_bytes(&bytes[..bytes.len() - 1]).is_err(),
            "cut"
        );
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Request::from_bytes(&padded).is_err(), "padded");
    }

    /// The layouts `docs/protocol.md` states for an instance's key lease: request tag 14 (the
    /// 16-byte instance id, then the leaving flag: 18 bytes); response tag 14, then 1 and a
    /// contender flag (and, if 1, its id and a little-endian u32 of seconds), or 2, the
    /// holder's id and its seconds. Anything else is refused.
    #[test]
    fn instance_lease_layout() {
        let id = [7u8; 16];
        let ask = Request::Instance { id, leaving: false };
        let mut bytes = vec![14];
        bytes.extend_from_slice(&id);
        bytes.push(0);
        assert_eq!(ask.to_bytes(), bytes);
        assert_eq!(Request::from_bytes(&bytes).unwrap(), ask);
        bytes[17] = 1;
        assert_eq!(
            Request::from_bytes(&bytes).unwrap(),
            Request::Instance { id, leaving: true }
        );
        bytes[17] = 2;
        assert!(Request::from_bytes(&bytes).is_err(), "leaving flag 2");
        assert!(Request::from_bytes(&bytes[..17]).is_err(), "cut");

        let granted = Response::Instance(InstanceLease::Granted { contender: None });
        assert_eq!(granted.to_bytes(), vec![14, 1, 0]);
        assert_eq!(Response::from_bytes(&[14, 1, 0]).unwrap(), granted);
        let contended = Response::Instance(InstanceLease::Granted {
            contender: Some((id, 300)),
        });
        let mut bytes = vec![14, 1, 1];
        bytes.extend_from_slice(&id);
        bytes.extend_from_slice(&300u32.to_le_bytes());
        assert_eq!(contended.to_bytes(), bytes);
        assert_eq!(Response::from_bytes(&bytes).unwrap(), contended);
        let held = Response::Instance(InstanceLease::HeldBy { id, ago_s: 5 });
        let mut bytes = vec![14, 2];
        bytes.extend_from_slice(&id);
        bytes.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(held.to_bytes(), bytes);
        assert_eq!(Response::from_bytes(&bytes).unwrap(), held);
        assert!(Response::from_bytes(&[14, 3]).is_err(), "another verdict");
        assert!(
            Response::from_bytes(&[14, 1, 2]).is_err(),
            "contender flag 2"
        );
        assert!(
            Response::from_bytes(&bytes[..bytes.len() - 1]).is_err(),
            "cut"
        );
        bytes.push(0);
        assert!(Response::from_bytes(&bytes).is_err(), "padded");
    }

    /// The layouts `docs/protocol.md` states for the lease renewal: request tag 5 (job,
    /// shard, nonce: 53 bytes), response tag 8 (deadline: 9 bytes).
    #[test]
    fn renew_layout() {
        let req = Request::Renew {
            job: blake3::hash(b"j"),
            shard: 0x0102_0304,
            nonce: [9; 16],
        };
        let bytes = req.to_bytes();
        assert_eq!((bytes[0], bytes.len()), (5, 53));
        assert_eq!(&bytes[33..37], &[4, 3, 2, 1], "integers are little-endian");
        let resp = Response::Renewed { deadline_ms: 7 };
        let bytes = resp.to_bytes();
        assert_eq!((bytes[0], bytes.len()), (8, 9));
        // Truncated or padded messages are refused.
        assert!(Request::from_bytes(&req.to_bytes()[..52]).is_err());
        let mut long = resp.to_bytes();
        long.push(0);
        assert!(Response::from_bytes(&long).is_err());
    }

    /// Found while writing the `wire_control` fuzz target, whose canonical check (decoded bytes
    /// re-encode to themselves) they broke: a lease request's demand above 1000 was clamped
    /// and a claim answer's flag was "any non-zero byte", so distinct byte strings decoded to
    /// one message.
    #[test]
    fn decoding_accepts_one_encoding_per_message() {
        let lease = Request::Lease {
            job: blake3::hash(b"j"),
            protocol: 1,
            demand_permille: 1000,
        };
        let bytes = lease.to_bytes();
        assert_eq!(Request::from_bytes(&bytes).unwrap(), lease);
        let mut over = bytes.clone();
        over[37..39].copy_from_slice(&1001u16.to_le_bytes());
        assert!(Request::from_bytes(&over).is_err(), "demand 1001 accepted");
        over[37..39].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Request::from_bytes(&over).is_err(), "demand 65535 accepted");

        let accepted = Response::ClaimAccepted { verified: true };
        assert_eq!(accepted.to_bytes(), [3, 1]);
        assert_eq!(
            Response::from_bytes(&[3, 0]).unwrap(),
            Response::ClaimAccepted { verified: false }
        );
        assert_eq!(Response::from_bytes(&[3, 1]).unwrap(), accepted);
        for flag in [2u8, 0x80, 0xff] {
            assert!(
                Response::from_bytes(&[3, flag]).is_err(),
                "verified flag {flag} accepted"
            );
        }
    }

    /// The receipts a coordinator hands back for `hearth doctor --repair --from`: request tag 9
    /// with an optional cursor, answer tag 10 with at most `MAX_RECEIPTS_PER_ANSWER` real
    /// receipts, which fit the control message bound; a peer claiming more is refused before
    /// any receipt is read.
    #[test]
    fn receipts_for_repair_round_trip_within_the_bound() {
        use crate::identity::Identity;
        use crate::model::receipt::{CreditTerms, EnergyMethod, WorkRecord};
        for after in [None, Some(blake3::hash(b"last"))] {
            let req = Request::Receipts { after };
            let bytes = req.to_bytes();
            assert_eq!(bytes[0], 9);
            assert_eq!(Request::from_bytes(&bytes).unwrap(), req);
        }
        assert!(
            Request::from_bytes(&[9, 2]).is_err(),
            "cursor flag 2 accepted"
        );
        let (w, s) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let receipts: Vec<Receipt> = (0..MAX_RECEIPTS_PER_ANSWER as u32)
            .map(|shard| {
                let record = WorkRecord {
                    job: blake3::hash(b"job"),
                    shard,
                    module: blake3::hash(b"module"),
                    input: blake3::hash(b"input"),
                    output: blake3::hash(b"output"),
                    worker: w.public(),
                    submitter: s.public(),
                    fuel: u64::MAX,
                    energy_mj: 6_000,
                    method: EnergyMethod::Rapl,
                    start_ms: 10,
                    end_ms: 20,
                    nonce: [9; 16],
                };
                let terms = CreditTerms::claimed(&record, 2, 2);
                Claim::sign(record, &w)
                    .unwrap()
                    .countersign(&s, terms)
                    .unwrap()
            })
            .collect();
        let full = Response::Receipts {
            receipts: receipts.clone(),
            more: true,
        };
        let bytes = full.to_bytes();
        assert!(bytes.len() <= MAX_CONTROL_MESSAGE, "{} bytes", bytes.len());
        assert_eq!(Response::from_bytes(&bytes).unwrap(), full);
        let empty = Response::Receipts {
            receipts: Vec::new(),
            more: false,
        };
        assert_eq!(empty.to_bytes(), [10, 0, 0]);
        assert_eq!(Response::from_bytes(&[10, 0, 0]).unwrap(), empty);
        assert!(
            Response::from_bytes(&[10, 2, 0]).is_err(),
            "more flag 2 accepted"
        );
        let mut over = bytes.clone();
        over[2] = MAX_RECEIPTS_PER_ANSWER as u8 + 1;
        assert!(Response::from_bytes(&over).is_err(), "more than the bound");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = JobGossip::from_bytes(&bytes);
            let _ = HeatDemand::from_bytes(&bytes);
            let _ = Request::from_bytes(&bytes);
            let _ = Response::from_bytes(&bytes);
        }
    }
}
