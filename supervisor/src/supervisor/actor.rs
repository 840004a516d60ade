//! `SupervisorActor`: OTP's supervisor rules on ractor.
//!
//! Everything a supervisor does happens inside its own handlers, one at a time: a child's exit
//! (a ractor supervision event) is handled to completion — group stop, restarts — before the
//! next request. Long waits (a child's shutdown timeout) therefore delay the next request, as
//! in OTP. Backoff and retried restarts go through the mailbox (`SystemMsg::RestartDue`), so
//! requests are served while a child waits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus};

use crate::event::{EventKind, ExitReason};
use crate::handle::{ActorHandle, Envelope, MailboxCounter, SystemMsg};
use crate::snapshot::{OnCorrupt, Persistence, Restored, SnapshotError, verify};
use crate::spec::{Restart, Shutdown, StartArgs, StartError, Strategy, TreeEnv};

use super::children::{Child, Children, Status};
use super::{
    ChildCounts, ChildInfo, KILL_WAIT_MAX, SHUTDOWN_REASON, SpecList, SupervisorConfig,
    SupervisorError, SupervisorMsg, join_path, validate_parts,
};

pub(crate) struct SupervisorActor;

pub(crate) struct SupArgs {
    pub(crate) config: Arc<SupervisorConfig>,
    pub(crate) specs: Arc<Mutex<SpecList>>,
    pub(crate) env: TreeEnv,
    pub(crate) path: String,
    pub(crate) handle: ActorHandle<SupervisorMsg>,
    pub(crate) generation: u64,
}

pub(crate) struct SupState {
    config: Arc<SupervisorConfig>,
    specs: Arc<Mutex<SpecList>>,
    env: TreeEnv,
    path: String,
    own: ActorHandle<SupervisorMsg>,
    mailbox: Arc<MailboxCounter>,
    children: Children,
    /// Restart times within the intensity period (at most `max_restarts + 1` entries).
    restarts: VecDeque<Instant>,
    /// Children waiting for `RestartDue(token)`, in start order.
    pending: HashMap<u64, Vec<Arc<str>>>,
    next_token: u64,
    rng: fastrand::Rng,
}

type HandlerResult = Result<(), ActorProcessingErr>;

impl ractor::Actor for SupervisorActor {
    type Msg = Envelope<SupervisorMsg>;
    type State = SupState;
    type Arguments = SupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupArgs,
    ) -> Result<SupState, ActorProcessingErr> {
        let mailbox = Arc::new(MailboxCounter::default());
        args.handle
            .install(myself.clone(), mailbox.clone(), args.generation);
        let initial: Vec<(u64, crate::spec::ChildSpec)> = {
            let list = lock(&args.specs);
            list.specs.iter().map(|(s, c)| (*s, c.clone())).collect()
        };
        let mut st = SupState {
            rng: args
                .config
                .seed
                .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            config: args.config,
            specs: args.specs,
            env: args.env,
            path: args.path,
            own: args.handle,
            mailbox,
            children: Children::default(),
            restarts: VecDeque::new(),
            pending: HashMap::new(),
            next_token: 0,
        };
        let specs: Vec<_> = initial.iter().map(|(_, c)| c.clone()).collect();
        if let Err(e) = validate_parts(st.own.id(), &st.config, &specs) {
            st.own.erased().mark_down();
            return Err(Box::new(e));
        }
        let sup = myself.get_cell();
        for (seq, spec) in initial {
            let id = spec.id.to_string();
            if let Err(e) = st.add_and_start(&sup, seq, spec).await {
                // OTP: a supervisor whose child fails to start fails to start; the children
                // already started are stopped again, in reverse order.
                st.shutdown_all().await;
                st.own.erased().mark_down();
                return Err(Box::new(SupervisorError::StartFailed {
                    id,
                    source: match e {
                        SupervisorError::StartFailed { source, .. } => source,
                        other => StartError::Spawn(other.to_string()),
                    },
                }));
            }
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut SupState,
    ) -> HandlerResult {
        let sup = myself.get_cell();
        match msg {
            Envelope::User(request) => {
                st.mailbox.take_one();
                st.handle_request(&sup, request).await;
                Ok(())
            }
            Envelope::System(SystemMsg::RestartDue(token)) => st.restart_due(&sup, token).await,
            Envelope::System(SystemMsg::SnapshotTick) => Ok(()),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: ractor::SupervisionEvent,
        st: &mut SupState,
    ) -> HandlerResult {
        let sup = myself.get_cell();
        match event {
            ractor::SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = ExitReason::from_stop_reason(reason.as_deref());
                st.on_child_exit(&sup, &cell.get_id(), reason).await
            }
            ractor::SupervisionEvent::ActorFailed(cell, error) => {
                let reason = ExitReason::Failed(error.to_string());
                st.on_child_exit(&sup, &cell.get_id(), reason).await
            }
            // Started and process-group events need nothing; the cluster feature adds more.
            _ => Ok(()),
        }
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, st: &mut SupState) -> HandlerResult {
        st.shutdown_all().await;
        st.own.erased().mark_down();
        st.env
            .events
            .publish(&st.path, None, EventKind::SupervisorStopped);
        Ok(())
    }
}

fn lock(specs: &Mutex<SpecList>) -> std::sync::MutexGuard<'_, SpecList> {
    // The lock is only held for map operations that cannot panic, so poisoning cannot happen;
    // if it did, the list itself is still consistent.
    specs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SupState {
    fn publish(&self, child: Option<&str>, kind: EventKind) {
        self.env.events.publish(&self.path, child, kind);
    }

    async fn handle_request(&mut self, sup: &ActorCell, request: SupervisorMsg) {
        match request {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = self.start_new_child(sup, spec).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::StartChildren(specs, reply) => {
                let mut results = Vec::with_capacity(specs.len());
                for spec in specs {
                    results.push(self.start_new_child(sup, spec).await);
                }
                let _ = reply.send(results);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = self.terminate_child(&id).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = self.restart_child(sup, &id).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::KillChild(id, reply) => {
                let result = match self.children.get(&id).map(|c| &c.status) {
                    None => Err(SupervisorError::NotFound(id)),
                    // The exit reaches this supervisor as a supervision event, and is handled
                    // like any crash.
                    Some(Status::Running(cell)) => {
                        cell.kill();
                        Ok(())
                    }
                    Some(_) => Err(SupervisorError::NotRunning(id)),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = self.delete_child(&id, false).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::RemoveChild(id, reply) => {
                let result = match self.terminate_child(&id).await {
                    Ok(()) if self.children.contains(&id) => self.delete_child(&id, false).await,
                    other => other,
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::PassivateChild(id, reply) => {
                let result = match self.terminate_child(&id).await {
                    Ok(()) if self.children.contains(&id) => self.delete_child(&id, true).await,
                    other => other,
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(self.children.iter().map(|c| c.info(&self.path)).collect());
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(self.count_children());
            }
        }
    }

    fn count_children(&self) -> ChildCounts {
        let mut counts = ChildCounts::default();
        for child in self.children.iter() {
            counts.specs += 1;
            if matches!(child.status, Status::Running(_)) {
                counts.active += 1;
            }
            match child.spec.kind {
                crate::spec::ChildKind::Worker => counts.workers += 1,
                crate::spec::ChildKind::Supervisor => counts.supervisors += 1,
            }
        }
        counts
    }

    async fn start_new_child(
        &mut self,
        sup: &ActorCell,
        spec: crate::spec::ChildSpec,
    ) -> Result<ChildInfo, SupervisorError> {
        spec.validate().map_err(SupervisorError::InvalidSpec)?;
        if self.children.contains(&spec.id) {
            return Err(SupervisorError::AlreadyPresent(spec.id.to_string()));
        }
        if let Some(max) = self.config.max_children
            && self.children.len() >= max
        {
            return Err(SupervisorError::MaxChildren {
                supervisor: self.path.clone(),
                max,
            });
        }
        let seq = {
            let mut list = lock(&self.specs);
            let seq = list.next_seq;
            list.next_seq += 1;
            seq
        };
        let id = spec.id.clone();
        let keep = spec.restart != Restart::Temporary;
        let kept_spec = keep.then(|| spec.clone());
        self.add_and_start(sup, seq, spec).await?;
        if let Some(spec) = kept_spec {
            lock(&self.specs).specs.insert(seq, spec);
        }
        self.children
            .get(&id)
            .map(|c| c.info(&self.path))
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))
    }

    /// Registers the child (path, registry, snapshot key) and starts it; on failure undoes the
    /// registration.
    async fn add_and_start(
        &mut self,
        sup: &ActorCell,
        seq: u64,
        spec: crate::spec::ChildSpec,
    ) -> Result<(), SupervisorError> {
        let id = spec.id.clone();
        let path = join_path(&self.path, &id);
        if let Some(p) = &spec.persistence {
            let claim = self
                .env
                .keys
                .entry(p.key.clone())
                .or_insert_with(|| path.clone());
            if *claim != path {
                return Err(SupervisorError::KeyInUse {
                    key: p.key.clone(),
                    used_by: claim.clone(),
                });
            }
        }
        if let Some(handle) = &spec.handle {
            handle.set_path(&path);
            self.env
                .registry
                .insert(path.clone(), handle.clone().into_any());
        }
        self.children.insert(Child {
            spec,
            seq,
            status: Status::Stopped,
            generation: 0,
            restarts: 0,
            recent: VecDeque::new(),
        });
        if let Err(source) = self.start_instance(sup, &id).await {
            // The restore may have taken the lease before the start failed.
            self.release(&id).await;
            self.forget(&id);
            return Err(SupervisorError::StartFailed {
                id: id.to_string(),
                source,
            });
        }
        Ok(())
    }

    /// Removes a child from every table (not from the spec list, not its snapshot).
    fn forget(&mut self, id: &str) {
        if let Some(child) = self.children.remove(id) {
            let path = join_path(&self.path, id);
            self.env.registry.remove(&path);
            if let Some(p) = &child.spec.persistence {
                self.env.keys.remove_if(&p.key, |_, owner| *owner == path);
            }
        }
    }

    /// Starts one incarnation of `id`: restores its snapshot, runs its start function, and
    /// handles a corrupt snapshot by its `on_corrupt` policy.
    async fn start_instance(&mut self, sup: &ActorCell, id: &str) -> Result<(), StartError> {
        let Some(child) = self.children.get(id) else {
            return Err(StartError::Spawn(format!("no child `{id}`")));
        };
        let start = child.spec.start.clone();
        let handle = child.spec.handle.clone();
        let persistence = child.spec.persistence.clone();
        let generation = handle
            .as_ref()
            .map_or(0, |h| h.last_generation())
            .max(child.generation)
            + 1;
        let path = join_path(&self.path, id);
        let restored = match &persistence {
            None => None,
            Some(p) => self.restore(&path, p).await?,
        };
        let had_snapshot = restored.is_some();
        let args = |restored| StartArgs {
            supervisor: sup.clone(),
            restored,
            generation,
            path: path.clone(),
            env: self.env.clone(),
        };
        let result = match start(args(restored)).await {
            Err(StartError::Snapshot(e @ SnapshotError::Corrupt { .. })) if had_snapshot => {
                // The frame verified but the state does not decode. Read the bytes again for
                // the quarantine rather than copy them on every start.
                let persistence = persistence.as_ref().ok_or_else(|| e.clone())?;
                let snapshots = self.env.snapshots.as_ref().ok_or_else(|| e.clone())?;
                let bytes = snapshots
                    .load_raw(&persistence.key)
                    .await?
                    .unwrap_or_default();
                self.quarantine(&path, persistence, bytes, &e).await?;
                match persistence.on_corrupt {
                    OnCorrupt::Fail => Err(StartError::Snapshot(e)),
                    OnCorrupt::StartFresh => start(args(None)).await,
                }
            }
            other => other,
        };
        let cell = match result {
            Ok(cell) => cell,
            Err(e) => {
                if let Some(h) = &handle {
                    h.mark_down();
                }
                self.publish(
                    Some(&path),
                    EventKind::ChildStartFailed {
                        error: e.to_string(),
                    },
                );
                return Err(e);
            }
        };
        let linked = cell
            .try_get_supervisor()
            .is_some_and(|s| s.get_id() == sup.get_id());
        if !linked && cell.get_status() < ActorStatus::Stopping {
            cell.kill();
            self.publish(
                Some(&path),
                EventKind::ChildStartFailed {
                    error: StartError::NotLinked.to_string(),
                },
            );
            return Err(StartError::NotLinked);
        }
        // A child that already died was linked when it died: its exit event is queued for us.
        self.children.set_running(id, cell, generation);
        self.publish(Some(&path), EventKind::ChildStarted { generation });
        Ok(())
    }

    /// Reads and verifies the child's snapshot; a corrupt one goes to the quarantine.
    async fn restore(
        &self,
        path: &str,
        persistence: &Persistence,
    ) -> Result<Option<Restored>, StartError> {
        let key = &persistence.key;
        let snapshots = self
            .env
            .snapshots
            .as_ref()
            .ok_or_else(|| SnapshotError::NoStore { key: key.clone() })?;
        // Single activation: a store shared by several nodes grants the key to one of them.
        snapshots.acquire(key).await?;
        let Some(bytes) = snapshots.load_raw(key).await? else {
            return Ok(None);
        };
        match verify(key, bytes) {
            Ok(restored) => Ok(Some(restored)),
            Err((e @ SnapshotError::Corrupt { .. }, bytes)) => {
                self.quarantine(path, persistence, bytes, &e).await?;
                match persistence.on_corrupt {
                    OnCorrupt::Fail => Err(StartError::Snapshot(e)),
                    OnCorrupt::StartFresh => Ok(None),
                }
            }
            Err((e, _)) => Err(StartError::Snapshot(e)),
        }
    }

    async fn quarantine(
        &self,
        path: &str,
        persistence: &Persistence,
        bytes: Vec<u8>,
        error: &SnapshotError,
    ) -> Result<(), StartError> {
        let snapshots = self
            .env
            .snapshots
            .as_ref()
            .ok_or_else(|| SnapshotError::NoStore {
                key: persistence.key.clone(),
            })?;
        let start_fresh = persistence.on_corrupt == OnCorrupt::StartFresh;
        let reason = error.to_string();
        let quarantine_id = snapshots
            .quarantine(&persistence.key, bytes, &reason, !start_fresh)
            .await?;
        self.publish(
            Some(path),
            EventKind::SnapshotQuarantined {
                key: persistence.key.clone(),
                reason,
                quarantine_id,
                start_fresh,
            },
        );
        Ok(())
    }

    /// A linked actor exited: apply the restart type, the intensity and the strategy.
    async fn on_child_exit(
        &mut self,
        sup: &ActorCell,
        actor: &ActorId,
        reason: ExitReason,
    ) -> HandlerResult {
        // An actor we stopped ourselves, or a stale incarnation, is no longer in the table.
        let Some(id) = self.children.take_actor(actor) else {
            return Ok(());
        };
        let Some(child) = self.children.get(&id) else {
            return Ok(());
        };
        if let Some(h) = &child.spec.handle {
            h.mark_down();
        }
        let restart_type = child.spec.restart;
        let path = join_path(&self.path, &id);
        self.publish(
            Some(&path),
            EventKind::ChildExited {
                reason: reason.clone(),
            },
        );
        let restart = match restart_type {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        };
        if !restart {
            self.release(&id).await;
            if restart_type == Restart::Temporary {
                self.forget(&id);
            }
            return Ok(());
        }
        if !self.add_restart() {
            return self.escalate().await;
        }
        let group = match self.config.strategy {
            Strategy::OneForOne => vec![id.clone()],
            Strategy::OneForAll => self.children.ids(),
            Strategy::RestForOne => self.children.ids_from(&id),
        };
        for other in group.iter().rev().filter(|g| **g != id) {
            self.stop_child(other).await;
        }
        // Temporary siblings were stopped and forgotten: they are not restarted.
        let group: Vec<Arc<str>> = group
            .into_iter()
            .filter(|g| self.children.contains(g))
            .collect();
        let delay = self.backoff_for(&id);
        self.restart_group(sup, group, delay).await
    }

    /// Records a restart; `false` when the intensity is exceeded.
    fn add_restart(&mut self) -> bool {
        let now = Instant::now();
        let period = self.config.intensity.period;
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > period)
        {
            self.restarts.pop_front();
        }
        self.restarts.len() <= self.config.intensity.max_restarts as usize
    }

    fn backoff_for(&mut self, id: &str) -> Duration {
        let period = self.config.intensity.period;
        let nth = match self.children.get_mut(id) {
            Some(child) => child.note_restart(Instant::now(), period),
            None => 1,
        };
        self.config.backoff.delay(nth, &mut self.rng)
    }

    /// Restarts `group` in start order now, or after `delay` through the mailbox.
    async fn restart_group(
        &mut self,
        sup: &ActorCell,
        group: Vec<Arc<str>>,
        delay: Duration,
    ) -> HandlerResult {
        if !delay.is_zero() {
            self.schedule(sup, group, delay);
            return Ok(());
        }
        for (i, id) in group.iter().enumerate() {
            if !self.children.contains(id) {
                continue;
            }
            match self.start_instance(sup, id).await {
                Ok(()) => {
                    let generation = self.children.get(id).map_or(0, |c| c.generation);
                    let path = join_path(&self.path, id);
                    self.publish(Some(&path), EventKind::ChildRestarted { generation });
                }
                Err(e) if e.held_by().is_some() => {
                    // Another node took the actor over (this node's lease lapsed): it lives
                    // there now. Not a failure of this subtree, so not counted or retried.
                    if let Some(child) = self.children.get_mut(id) {
                        child.status = Status::Stopped;
                    }
                    let path = join_path(&self.path, id);
                    let holder = e.held_by().unwrap_or_default().to_owned();
                    self.publish(Some(&path), EventKind::ChildMoved { holder });
                }
                Err(_) => {
                    // OTP: a failed restart counts as another restart and is tried again
                    // later, letting the supervisor serve its mailbox in between.
                    if !self.add_restart() {
                        return self.escalate().await;
                    }
                    let delay = self.backoff_for(id);
                    self.schedule(sup, group[i..].to_vec(), delay);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn schedule(&mut self, sup: &ActorCell, group: Vec<Arc<str>>, delay: Duration) {
        let token = self.next_token;
        self.next_token += 1;
        for id in &group {
            if let Some(child) = self.children.get_mut(id) {
                child.status = Status::Restarting(token);
            }
            let path = join_path(&self.path, id);
            self.publish(
                Some(&path),
                EventKind::RestartScheduled {
                    delay_ms: ms(delay),
                },
            );
        }
        self.pending.insert(token, group);
        let msg = move || Envelope::<SupervisorMsg>::System(SystemMsg::RestartDue(token));
        if delay.is_zero() {
            // Sending to ourselves only fails when we are stopping, and then nothing restarts.
            let _ = sup.send_message(msg());
        } else {
            // The timer task ends by itself; a stale token is ignored when it fires.
            let _timer = ractor::time::send_after(delay, sup.clone(), msg);
        }
    }

    async fn restart_due(&mut self, sup: &ActorCell, token: u64) -> HandlerResult {
        let Some(group) = self.pending.remove(&token) else {
            return Ok(());
        };
        let group: Vec<Arc<str>> = group
            .into_iter()
            .filter(|id| {
                self.children
                    .get(id)
                    .is_some_and(|c| matches!(c.status, Status::Restarting(t) if t == token))
            })
            .collect();
        self.restart_group(sup, group, Duration::ZERO).await
    }

    /// Stops a running child by its shutdown spec (a restarting one just stops waiting); a
    /// `Temporary` child is forgotten.
    async fn stop_child(&mut self, id: &str) {
        let Some(child) = self.children.get(id) else {
            return;
        };
        let shutdown = child.spec.shutdown;
        let temporary = child.spec.restart == Restart::Temporary;
        let path = join_path(&self.path, id);
        let handle = child.spec.handle.clone();
        if let Some(cell) = self.children.take_running(id) {
            if let Some(h) = &handle {
                h.mark_down();
            }
            let reason = stop_cell(&cell, shutdown).await;
            self.publish(Some(&path), EventKind::ChildExited { reason });
        } else if let Some(child) = self.children.get_mut(id) {
            child.status = Status::Stopped;
        }
        if temporary {
            self.release(id).await;
            self.forget(id);
        }
    }

    /// Gives up the lease on a stopped child's snapshot key, so that another node of a
    /// cluster may activate it at once. A failure only delays that until the lease expires.
    async fn release(&self, id: &str) {
        let Some(child) = self.children.get(id) else {
            return;
        };
        if let (Some(p), Some(snapshots)) = (&child.spec.persistence, &self.env.snapshots)
            && let Err(error) = snapshots.release(&p.key).await
        {
            tracing::warn!(supervisor = %self.path, child = id, %error, "lease not released");
        }
    }

    /// Stops every child in reverse start order.
    async fn shutdown_all(&mut self) {
        self.pending.clear();
        for id in self.children.ids().iter().rev() {
            self.stop_child(id).await;
            self.release(id).await;
        }
    }

    async fn escalate(&mut self) -> HandlerResult {
        let intensity = self.config.intensity;
        self.publish(
            None,
            EventKind::IntensityExceeded {
                max_restarts: intensity.max_restarts,
                period_ms: ms(intensity.period),
            },
        );
        self.shutdown_all().await;
        self.own.erased().mark_down();
        let error = SupervisorError::IntensityExceeded {
            supervisor: self.path.clone(),
            max_restarts: intensity.max_restarts,
            period_ms: ms(intensity.period),
        };
        self.publish(
            None,
            EventKind::Escalated {
                reason: error.to_string(),
            },
        );
        Err(Box::new(error))
    }

    async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        if !self.children.contains(id) {
            return Err(SupervisorError::NotFound(id.to_owned()));
        }
        let path = join_path(&self.path, id);
        self.stop_child(id).await;
        self.release(id).await;
        self.publish(Some(&path), EventKind::ChildTerminated);
        Ok(())
    }

    async fn restart_child(
        &mut self,
        sup: &ActorCell,
        id: &str,
    ) -> Result<ChildInfo, SupervisorError> {
        let Some(child) = self.children.get(id) else {
            return Err(SupervisorError::NotFound(id.to_owned()));
        };
        match child.status {
            Status::Running(_) => return Err(SupervisorError::Running(id.to_owned())),
            Status::Restarting(_) => return Err(SupervisorError::Restarting(id.to_owned())),
            Status::Stopped => {}
        }
        self.start_instance(sup, id)
            .await
            .map_err(|source| SupervisorError::StartFailed {
                id: id.to_owned(),
                source,
            })?;
        self.children
            .get(id)
            .map(|c| c.info(&self.path))
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    /// Forgets a stopped child; its snapshot is deleted unless `keep_snapshot`.
    async fn delete_child(&mut self, id: &str, keep_snapshot: bool) -> Result<(), SupervisorError> {
        let Some(child) = self.children.get(id) else {
            return Err(SupervisorError::NotFound(id.to_owned()));
        };
        match child.status {
            Status::Running(_) => return Err(SupervisorError::Running(id.to_owned())),
            Status::Restarting(_) => return Err(SupervisorError::Restarting(id.to_owned())),
            Status::Stopped => {}
        }
        let path = join_path(&self.path, id);
        let seq = child.seq;
        if !keep_snapshot
            && let Some(p) = &child.spec.persistence
            && let Some(snapshots) = &self.env.snapshots
        {
            snapshots.delete(&p.key).await?;
        }
        self.release(id).await;
        self.forget(id);
        lock(&self.specs).specs.remove(&seq);
        self.publish(Some(&path), EventKind::ChildDeleted);
        Ok(())
    }
}

/// Stops `cell` by `shutdown` and reports how it ended.
async fn stop_cell(cell: &ActorCell, shutdown: Shutdown) -> ExitReason {
    let reason = Some(SHUTDOWN_REASON.to_owned());
    match shutdown {
        Shutdown::BrutalKill => {
            kill(cell).await;
            ExitReason::Killed
        }
        Shutdown::Timeout(timeout) => match cell.stop_and_wait(reason, Some(timeout)).await {
            Err(ractor::RactorErr::Timeout) => {
                kill(cell).await;
                ExitReason::Killed
            }
            // Ok, or the actor was already gone.
            _ => ExitReason::Shutdown,
        },
        Shutdown::Infinity => {
            // Err only if it was already gone.
            let _ = cell.stop_and_wait(reason, None).await;
            ExitReason::Shutdown
        }
    }
}

async fn kill(cell: &ActorCell) {
    if cell.kill_and_wait(Some(KILL_WAIT_MAX)).await.is_err() {
        tracing::error!(
            actor = %cell.get_id(),
            "child did not exit within {KILL_WAIT_MAX:?} of a kill (a handler blocking its thread?); abandoning it"
        );
    }
}
