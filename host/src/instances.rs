//! Instances through EC2's lifecycle: launch, start, stop, reboot,
//! terminate, a type change; each running instance is its own instance
//! process ([`crate::supervisor`]), started here and outliving the command.

use super::*;

impl Host {
    /// Launches a new instance and waits until it runs.
    ///
    /// With a client token, safe to call again after a crash at any point:
    /// the instance id and its root volume's id are recorded with the token
    /// before anything is made, the instance's record, its root volume, its
    /// tags and the token's completion are written in one transaction, and
    /// a call with a token used before returns that instance — started if
    /// the first call died before it ran (see [`Host::start`]).
    pub fn launch(&self, req: &LaunchRequest) -> Result<InstanceRecord, HostError> {
        let itype = instance_type(&req.instance_type).map_err(HostError::Invalid)?;
        for (k, v) in &req.tags {
            store::check_tag(k, v)?;
        }
        let mut store = self.store()?;
        let image = store.image(&req.image_id)?;
        let image = self.in_region(&req.image_id, &image.region.clone(), image)?;
        if !image.launchable_by(&self.profile) {
            return Err(HostError::Conflict(format!(
                "profile {} may not launch image {} (owned by {}, private); its owner can share it with `drydock image modify {} --add-profile {}`",
                self.profile, image.id, image.owner, image.id, self.profile
            )));
        }
        // What identifies the request (no secrets: whether a password is
        // set, the user-data's digest).
        let request = serde_json::json!({
            "region": self.region,
            "image": image.id,
            "type": itype.name,
            "config": req.config.summary(),
            "root_delete_on_termination": req.root_delete_on_termination,
            "tags": req.tags,
            "subnet": req.subnet_id,
            "security_groups": req.security_group_ids,
            "network": req.network,
        });
        // The subnet is checked before anything is made.
        if !req.network && (req.subnet_id.is_some() || !req.security_group_ids.is_empty()) {
            return Err(HostError::Invalid(
                "an instance launched without a network has no subnet or security groups; drop --no-network or them".into(),
            ));
        }
        // Who makes its network (this process as root, or the network
        // agent) is known before anything is made.
        if req.network {
            crate::network::check_available(&self.data_dir)?;
        }
        let subnet = match &req.subnet_id {
            Some(sid) => {
                let subnet = store.subnet(sid)?;
                self.in_region(sid, &subnet.region.clone(), subnet)?
            }
            None => store.default_subnet(&self.region)?,
        };
        let groups = if !req.network {
            Vec::new()
        } else {
            self.groups_for(&mut store, &subnet, &req.security_group_ids)?
        };
        let root_candidate = new_id("vol");
        let creation = store.begin_creation(
            req.client_token.as_ref(),
            client_tokens::CreatedKind::Instance,
            &request,
            &serde_json::json!({ "root_volume": root_candidate }),
        )?;
        drop(store);
        let (id, vol_id) = match creation {
            client_tokens::Creation::Done { id, .. } => {
                tracing::info!(instance = %id, "launch already made this instance (client token); making sure it runs");
                return self.launched(&id);
            }
            client_tokens::Creation::Fresh { id } => (id, root_candidate),
            client_tokens::Creation::Unfinished { id, detail } => {
                let vol = detail
                    .get("root_volume")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .unwrap_or(root_candidate);
                tracing::warn!(instance = %id, "finishing a launch cut off before its instance was recorded");
                (id, vol)
            }
        };
        std::fs::create_dir_all(self.volumes_dir())
            .map_err(|e| HostError::io("create", &self.volumes_dir(), e))?;
        let vol_path = self.volumes_dir().join(format!("{vol_id}.raw"));
        extents::copy_allocated(&image.root_template, &vol_path)
            .map_err(|e| HostError::io("create root volume", &vol_path, e))?;
        let size_mib = std::fs::metadata(&vol_path)
            .map(|m| m.len() / (1 << 20))
            .unwrap_or(0);
        let mut config = req.config.clone();
        if config.hostname.is_empty() {
            config.hostname = id.clone();
        }
        let rec = InstanceRecord {
            id: id.clone(),
            region: self.region.clone(),
            instance_type: itype.name.to_string(),
            image_id: image.id.clone(),
            state: InstanceState::Pending,
            state_reason: "launching".into(),
            root_volume: vol_id.clone(),
            supervisor_pid: None,
            supervisor_token: None,
            boots: 0,
            config,
            created_at: now_ms(),
            state_since: now_ms(),
            after_host_failure: req.after_host_failure,
            auto_recovery: req.auto_recovery,
        };
        let root = VolumeRecord {
            id: vol_id,
            region: self.region.clone(),
            size_mib,
            kind: VolumeKind::Network,
            path: vol_path,
            attached_to: Some(id.clone()),
            attach_index: Some(0),
            delete_on_termination: req.root_delete_on_termination,
            created_at: now_ms(),
        };
        // The launching command owns the start: one that dies before the
        // instance process runs leaves it to be taken over (Host::start).
        let me = RunnerIdentity::current();
        let owner = format!("{}:{}", me.pid, me.token);
        self.store()?.commit_creation(
            req.client_token.as_ref(),
            Some((TagKind::Instance, &id, &req.tags)),
            |tx| {
                store::insert_volume(tx, &root)?;
                store::insert_instance(tx, &rec)?;
                if req.network {
                    let eni = store::insert_primary_interface(tx, &id, &subnet)?;
                    store::join_groups(tx, &eni.id, &groups)?;
                }
                tx.execute(
                    "UPDATE instances SET op_owner = ?2, auto_recovery = ?3 WHERE id = ?1",
                    rusqlite::params![id, owner, req.auto_recovery],
                )?;
                store::queue_state_event(tx, &id, "pending", "launched")?;
                Ok(())
            },
        )?;
        self.store()?.flush_events_or_warn();
        self.spawn_supervisor(&id)?;
        self.wait_for(&id, START_TIMEOUT, |i| i.state != InstanceState::Pending)?;
        self.running_or_error(&id, " was launched but")
    }

    /// A launched instance, started if its launch was cut off before it ran.
    fn launched(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let rec = self.store()?.instance(id)?;
        match rec.state {
            InstanceState::Pending | InstanceState::Stopped => self.start(id),
            _ => Ok(rec),
        }
    }

    /// The instance's record if it runs, else an error naming its state,
    /// the reason and where its log is.
    fn running_or_error(&self, id: &str, what: &str) -> Result<InstanceRecord, HostError> {
        let rec = self.store()?.instance(id)?;
        if rec.state != InstanceState::Running {
            return Err(HostError::Vmm(format!(
                "instance {id}{what} did not start: it is {} ({}); see {}",
                rec.state,
                rec.state_reason,
                self.instance_dir(id).join("supervisor.log").display()
            )));
        }
        Ok(rec)
    }

    /// Starts a stopped instance and waits until it runs.
    ///
    /// Safe to run again after a crash at any point, and against other
    /// commands at once: the start is claimed in the host store (only one
    /// command wins; a concurrent one is told another start is under way),
    /// and a start whose command died is finished — its instance process
    /// waited for if it runs, started again if it never did — saying so in
    /// the log and the state reason.
    pub fn start(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let me = RunnerIdentity::current();
        let me_text = format!("{}:{}", me.pid, me.token);
        let mut store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        match i.state {
            InstanceState::Running => return Ok(i),
            InstanceState::Stopped => {
                if !store.interfaces(id)?.is_empty() {
                    crate::network::check_available(&self.data_dir)?;
                }
                if !store
                    .attached(id)?
                    .iter()
                    .any(|v| v.attach_index == Some(0))
                {
                    return Err(HostError::Conflict(format!(
                        "instance {id} has no root volume; attach one with `drydock volume attach VOLUME {id} --root`"
                    )));
                }
                if !store.claim_start(id, &me_text)? {
                    return Err(self.start_conflict(id));
                }
                drop(store);
                self.spawn_supervisor(id)?;
            }
            InstanceState::Pending => {
                let owner = store.op_owner(id)?;
                let owner_alive = owner
                    .as_deref()
                    .and_then(parse_owner)
                    .is_some_and(|o| o.is_alive());
                if owner_alive {
                    return Err(self.start_conflict(id));
                }
                // A start cut short: finish it.
                let running = supervisor::instance_process_running(&self.instance_dir(id));
                let found = if running {
                    "found a start cut short whose instance process runs; waiting for it"
                } else {
                    "found a start cut short before its instance process ran; starting it again"
                };
                tracing::warn!(instance = id, "{found}");
                if !store.take_over_start(
                    id,
                    owner.as_deref(),
                    &me_text,
                    &format!("starting ({found})"),
                )? {
                    return Err(self.start_conflict(id));
                }
                drop(store);
                if !running {
                    self.spawn_supervisor(id)?;
                }
            }
            other => {
                return Err(HostError::Conflict(format!(
                    "instance {id} is {other}; only a stopped instance can be started"
                )))
            }
        }
        self.wait_for(id, START_TIMEOUT, |i| i.state != InstanceState::Pending)?;
        self.running_or_error(id, "")
    }

    fn start_conflict(&self, id: &str) -> HostError {
        HostError::Conflict(format!(
            "instance {id} is already being started by another command; wait for it (`drydock instances`)"
        ))
    }

    /// Stops a running instance: the guest syncs and powers off (or, with
    /// `force`, the VMM is stopped at once). Waits until it is stopped.
    pub fn stop(&self, id: &str, force: bool) -> Result<InstanceRecord, HostError> {
        let store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        drop(store);
        match i.state {
            InstanceState::Stopped => return Ok(i),
            InstanceState::Running | InstanceState::Pending | InstanceState::Stopping => {}
            other => {
                return Err(HostError::Conflict(format!(
                    "instance {id} is {other}; it cannot be stopped"
                )))
            }
        }
        let command = if force {
            ControlCommand::StopForce
        } else {
            ControlCommand::Stop
        };
        supervisor::send_control(&self.instance_dir(id), &command)?;
        self.wait_for(id, STOP_TIMEOUT, |i| i.state == InstanceState::Stopped)?;
        // The instance process ends after recording the stop, once it has
        // taken down what the instance used (its VPC's namespace when it
        // was the last): a stop returns when nothing of it is left.
        let dir = self.instance_dir(id);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while supervisor::instance_process_running(&dir) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.store()?.instance(id)
    }

    /// Reboots a running instance in place: same VMM, same volumes.
    pub fn reboot(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        if i.state != InstanceState::Running {
            return Err(HostError::Conflict(format!(
                "instance {id} is {}; only a running instance can be rebooted",
                i.state
            )));
        }
        let boots = i.boots;
        drop(store);
        supervisor::send_control(&self.instance_dir(id), &ControlCommand::Reboot)?;
        self.wait_for(id, START_TIMEOUT, |i| {
            i.boots > boots || i.state != InstanceState::Running
        })?;
        self.store()?.instance(id)
    }

    /// Terminates an instance: stops it, deletes the volumes marked
    /// DeleteOnTermination, detaches the others.
    pub fn terminate(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        if i.state == InstanceState::Terminated {
            return Ok(i);
        }
        if i.state.has_process() {
            self.stop(id, true)?;
        }
        let mut store = self.store()?;
        store.set_state(id, InstanceState::ShuttingDown, "terminating")?;
        for v in store.attached(id)? {
            if v.delete_on_termination || v.kind == VolumeKind::InstanceStore {
                match std::fs::remove_file(&v.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(HostError::io("delete volume file", &v.path, e)),
                }
                store.delete_volume_row(&v.id)?;
            } else {
                store.detach_volume(&v.id)?;
            }
        }
        store.mark_terminated(id, "terminated by user")?;
        store.instance(id)
    }

    /// Changes the type of a stopped instance.
    pub fn modify_type(&self, id: &str, new_type: &str) -> Result<InstanceRecord, HostError> {
        let t = instance_type(new_type).map_err(HostError::Invalid)?;
        let mut store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        if i.state != InstanceState::Stopped {
            return Err(HostError::Conflict(format!(
                "instance {id} is {}; stop it first (`drydock instance stop {id}`), then change its type",
                i.state
            )));
        }
        store.set_instance_type(id, t.name)?;
        store.instance(id)
    }

    /// Sets what a host outage leaves the instance as.
    pub fn set_after_host_failure(
        &self,
        id: &str,
        policy: AfterHostFailure,
    ) -> Result<InstanceRecord, HostError> {
        let mut store = self.store()?;
        let i = store.instance(id)?;
        self.in_region(id, &i.region.clone(), ())?;
        store.set_after_host_failure(id, policy)?;
        store.instance(id)
    }

    /// Turns automatic recovery of an instance on or off.
    pub fn set_auto_recovery(&self, id: &str, on: bool) -> Result<InstanceRecord, HostError> {
        let mut store = self.store()?;
        let i = store.instance(id)?;
        self.in_region(id, &i.region.clone(), ())?;
        store.set_auto_recovery(id, on)?;
        store.instance(id)
    }

    fn spawn_supervisor(&self, id: &str) -> Result<(), HostError> {
        let dir = self.instance_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("create", &dir, e))?;
        let log = dir.join("supervisor.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| HostError::io("open", &log, e))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| HostError::io("open", &log, e))?;
        let mut cmd = (self.supervisor)(id);
        cmd.stdin(Stdio::null()).stdout(log_file).stderr(err_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| HostError::Vmm(format!("cannot start the instance process: {e}")))?;
        // The supervisor outlives this command; it is reaped by init.
        std::mem::forget(child);
        Ok(())
    }

    fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&InstanceRecord) -> bool,
    ) -> Result<(), HostError> {
        let start = Instant::now();
        loop {
            let i = self.store()?.instance(id)?;
            if done(&i) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(HostError::Vmm(format!(
                    "instance {id} is still {} after {}s ({}); see {}",
                    i.state,
                    timeout.as_secs(),
                    i.state_reason,
                    self.instance_dir(id).join("supervisor.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
