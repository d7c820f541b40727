# `nix develop`: everything to build, test and run jetsource.
{ pkgs }:

pkgs.mkShell {
  packages = with pkgs; [
    cargo
    rustc
    clippy
    rustfmt
    rust-analyzer
    cargo-nextest
    nats-server
    natscli
    (python3.withPackages (ps: [ ps.nats-py ]))  # hiring/examples/walkthrough.py
    chromium  # the console's browser test (hiring/tests/console.rs)
    chromedriver
  ];

  shellHook = ''
    export NATS_SERVER_BIN=${pkgs.nats-server}/bin/nats-server
    export CHROMIUM=${pkgs.chromium}/bin/chromium
    export CHROMEDRIVER=${pkgs.chromedriver}/bin/chromedriver
  '';
}
