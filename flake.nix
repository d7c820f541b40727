{
  description = "jetsource: event-sourced, CQRS domains on NATS JetStream";

  # One nixos-unstable revision (2026-06-29; nats-server >= 2.12), not the moving
  # branch: the flake.lock a first `nix develop` writes is then the same everywhere.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/b5aa0fbd538984f6e3d201be0005b4463d8b09f8";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      # `nix run` / `nix run .#up`: the whole stack locally (add `-- --demo` for the
      # hiring story); `nix run .#node`: one node against NATS_URL.
      apps = forAll (pkgs:
        let jetsource = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
            app = name: script: {
              type = "app";
              program = "${pkgs.writeShellScript "jetsource-${name}" script}";
            };
        in rec {
          up = app "up" ''
            export NATS_SERVER_BIN=''${NATS_SERVER_BIN:-${pkgs.nats-server}/bin/nats-server}
            exec ${jetsource}/bin/jetsource up "$@"
          '';
          node = app "node" ''exec ${jetsource}/bin/jetsource node "$@"'';
          default = up;
        });

      devShells = forAll (pkgs: {
        default = import ./nix/shell.nix { inherit pkgs; };
      });

      # `nix flake check` builds the package, which runs `cargo test` against the
      # nats-server from nixpkgs (see nix/package.nix).
      # The test suite includes `jetsource up --demo` and the saga crash test.
      checks = forAll (pkgs: {
        tests = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });

      # NixOS: nats-server with JetStream plus node, projections and sagas as services.
      nixosModules.default = { pkgs, lib, ... }: {
        imports = [ ./nix/module.nix ];
        services.jetsource.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
    };
}
