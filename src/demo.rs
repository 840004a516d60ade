//! A small persistent actor used by the quickstart example, the crash probe and the
//! benchmarks: a counter whose state can carry a payload of a chosen size.

use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};

use aios_supervisor::{Context, PersistentWorker, Worker};

/// A persistent counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter;

/// The counter's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// The count.
    pub n: u64,
    /// Filler, to give the state a size (the restart benchmark uses 1 KiB).
    pub payload: Vec<u8>,
}

/// The counter's messages.
#[derive(Debug)]
pub enum CounterMsg {
    /// Adds to the count; replies with the new count once the snapshot policy is satisfied.
    Add(u64, RpcReplyPort<u64>),
    /// Adds without replying.
    Bump(u64),
    /// Replies with the count.
    Get(RpcReplyPort<u64>),
    /// Replaces the payload with `len` bytes; replies when done.
    SetPayload(usize, RpcReplyPort<()>),
    /// Panics, to demonstrate a restart.
    Crash,
}

impl Worker for Counter {
    type Msg = CounterMsg;
    type State = CounterState;

    async fn init(
        &self,
        _ctx: &mut Context<CounterMsg>,
        restored: Option<CounterState>,
    ) -> Result<CounterState, ActorProcessingErr> {
        Ok(restored.unwrap_or_default())
    }

    async fn handle(
        &self,
        ctx: &mut Context<CounterMsg>,
        msg: CounterMsg,
        state: &mut CounterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(k, reply) => {
                state.n += k;
                ctx.reply(reply, state.n);
            }
            CounterMsg::Bump(k) => state.n += k,
            CounterMsg::Get(reply) => ctx.reply(reply, state.n),
            CounterMsg::SetPayload(len, reply) => {
                state.payload = vec![0xa5; len];
                ctx.reply(reply, ());
            }
            CounterMsg::Crash => panic!("the demo counter was told to crash"),
        }
        Ok(())
    }
}

impl PersistentWorker for Counter {}
