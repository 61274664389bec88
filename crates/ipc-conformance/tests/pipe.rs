//! The conformance suite against ipc-pipe: both directions of a duplex
//! pipe (a socketpair), a one-way pipe (writer → reader), pipes with a
//! small kernel buffer, and the cross-process checks over forked children.

use ipc_pipe::{Connection, Pipe};

/// A duplex pipe, sending from the first end.
fn duplex() -> (Connection, Connection) {
    ipc_pipe::duplex().expect("duplex pipe")
}

/// A duplex pipe, sending from the second end.
fn duplex_reversed() -> (Connection, Connection) {
    let (a, b) = ipc_pipe::duplex().expect("duplex pipe");
    (b, a)
}

/// A one-way pipe as (writer, reader).
fn one_way() -> (Connection, Connection) {
    let (reader, writer) = ipc_pipe::one_way().expect("one-way pipe");
    (writer, reader)
}

/// Pipes whose kernel buffers keep the defaults.
fn small_buffer_duplex() -> (Connection, Connection) {
    Pipe::new().buffer_size(0).duplex().expect("duplex pipe")
}

fn small_buffer_one_way() -> (Connection, Connection) {
    let (reader, writer) = Pipe::new().buffer_size(0).one_way().expect("one-way pipe");
    (writer, reader)
}

#[test]
fn duplex_conforms() {
    ipc_conformance::run_all(duplex);
}

#[test]
fn duplex_reversed_conforms() {
    ipc_conformance::run_all(duplex_reversed);
}

#[test]
fn one_way_conforms() {
    ipc_conformance::run_all(one_way);
}

#[test]
fn default_buffer_duplex_conforms() {
    ipc_conformance::run_all(small_buffer_duplex);
}

#[test]
fn default_buffer_one_way_conforms() {
    ipc_conformance::run_all(small_buffer_one_way);
}

#[test]
fn duplex_child_sends() {
    ipc_conformance::cross_process_send(duplex, 1000);
}

#[test]
fn duplex_child_receives() {
    ipc_conformance::cross_process_recv(duplex, 1000);
}

#[test]
fn one_way_child_sends() {
    ipc_conformance::cross_process_send(one_way, 1000);
}

#[test]
fn one_way_child_receives() {
    ipc_conformance::cross_process_recv(one_way, 1000);
}

#[test]
fn default_buffer_one_way_child_sends() {
    ipc_conformance::cross_process_send(small_buffer_one_way, 1000);
}
