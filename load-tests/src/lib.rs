//! The load-test harness's own logic, kept apart from I/O so it can be tested: when each
//! request is due (open-loop rate schedules) and how latency is recorded (from the scheduled
//! time, so a stalled target shows up as the queueing it causes: no coordinated omission).
pub mod latency;
pub mod report;
pub mod scenario;
pub mod schedule;
