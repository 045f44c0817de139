//! Control protocol requests and responses: a peer's request reaches the coordinator and a
//! coordinator's answer reaches the worker as raw bytes. Decoding must not panic, decoded
//! messages are canonical, and well-formed messages survive encode → decode.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::{Result, Unstructured};
use hearth::model::commit::Commitment;
use hearth::model::wire::{
    DenyReason, Lease, Request, Response, MAX_REASON, MAX_RECEIPTS_PER_ANSWER,
};
use libfuzzer_sys::fuzz_target;

fn reason(u: &mut Unstructured<'_>) -> Result<String> {
    u.arbitrary()
}

fn commitment(u: &mut Unstructured<'_>) -> Result<Commitment> {
    Ok(Commitment {
        coordinator: common::key(u)?,
        seq: u.arbitrary()?,
        count: u.arbitrary()?,
        root: u.arbitrary()?,
        first_ms: u.arbitrary()?,
        last_ms: u.arbitrary()?,
        sig: u.arbitrary()?,
    })
}

fn built(u: &mut Unstructured<'_>) -> Result<()> {
    let req = match u.int_in_range(0..=9u8)? {
        0 => Request::Lease {
            job: common::hash(u)?,
            protocol: u.arbitrary()?,
            demand_permille: u.arbitrary()?,
        },
        1 => Request::Claim(common::claim(u)?),
        2 => Request::Receipt {
            receipt: Box::new(common::receipt(u)?),
            inclusion: hearth::model::commit::Inclusion {
                commitment: commitment(u)?,
                index: u.arbitrary()?,
                path: (0..u.int_in_range(0..=16u8)?)
                    .map(|_| u.arbitrary())
                    .collect::<Result<_>>()?,
            },
        },
        3 => Request::Failure {
            job: common::hash(u)?,
            shard: u.arbitrary()?,
            nonce: u.arbitrary()?,
            reason: reason(u)?,
        },
        4 => Request::Decline {
            job: common::hash(u)?,
            reason: reason(u)?,
        },
        5 => Request::Receipts {
            after: if u.arbitrary()? {
                Some(common::hash(u)?)
            } else {
                None
            },
        },
        6 => Request::Evidence {
            after: if u.arbitrary()? {
                Some(u.arbitrary::<[u8; 68]>()?)
            } else {
                None
            },
        },
        7 => Request::LastCommitment,
        8 => Request::Witness(Box::new(commitment(u)?)),
        _ => Request::Renew {
            job: common::hash(u)?,
            shard: u.arbitrary()?,
            nonce: u.arbitrary()?,
        },
    };
    let text_fits = |s: &str| s.len() <= MAX_REASON;
    let back = Request::from_bytes(&req.to_bytes());
    match &req {
        // A demand is at most 1000 permille; more has no second meaning, it is refused.
        Request::Lease {
            demand_permille, ..
        } if *demand_permille > 1000 => {
            assert!(back.is_err(), "a demand above 1000 permille was accepted")
        }
        // An over-long reason is cut on a char boundary when encoding; it must still decode.
        Request::Failure { reason, .. } | Request::Decline { reason, .. } if !text_fits(reason) => {
            assert!(back.is_ok(), "{req:?} encodes to bytes that do not decode")
        }
        // Every other request must come back as itself.
        _ => assert_eq!(back.ok().as_ref(), Some(&req)),
    }

    let resp = match u.int_in_range(0..=9u8)? {
        0 => Response::Leased(Lease {
            job: common::hash(u)?,
            shard: u.arbitrary()?,
            nonce: u.arbitrary()?,
            deadline_ms: u.arbitrary()?,
        }),
        1 => Response::Denied {
            reason: *u.choose(&[
                DenyReason::UnknownJob,
                DenyReason::JobComplete,
                DenyReason::NothingFree,
                DenyReason::Excluded,
                DenyReason::VersionMismatch,
                DenyReason::Busy,
            ])?,
            retry_after_ms: u.arbitrary()?,
            detail: reason(u)?,
        },
        2 => Response::ClaimAccepted {
            verified: u.arbitrary()?,
        },
        3 => Response::ClaimRejected { detail: reason(u)? },
        4 => Response::ReceiptStored,
        5 => Response::FailureNoted,
        6 => Response::Error { detail: reason(u)? },
        7 => Response::Receipts {
            receipts: (0..u.int_in_range(0..=MAX_RECEIPTS_PER_ANSWER)?)
                .map(|_| common::receipt(u))
                .collect::<Result<Vec<_>>>()?,
            more: u.arbitrary()?,
        },
        8 => Response::LastCommitment(if u.arbitrary()? {
            Some(Box::new(commitment(u)?))
        } else {
            None
        }),
        _ => Response::Renewed {
            deadline_ms: u.arbitrary()?,
        },
    };
    let fits = match &resp {
        Response::Denied { detail, .. }
        | Response::ClaimRejected { detail }
        | Response::Error { detail } => text_fits(detail),
        _ => true,
    };
    let back = Response::from_bytes(&resp.to_bytes());
    if fits {
        assert_eq!(back.ok().as_ref(), Some(&resp));
    } else {
        assert!(back.is_ok(), "{resp:?} encodes to bytes that do not decode");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    canonical!(Request, data);
    canonical!(Response, data);
    let _ = built(&mut Unstructured::new(data));
});
