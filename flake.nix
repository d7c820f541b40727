{
  description = "jetsource: event-sourced, CQRS domains on NATS JetStream";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      devShells = forAll (pkgs: {
        default = import ./nix/shell.nix { inherit pkgs; };
      });

      # `nix flake check` builds the package, which runs `cargo test` against the
      # nats-server from nixpkgs (see nix/package.nix).
      checks = forAll (pkgs: {
        tests = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });
    };
}
