# NixOS module: nats-server with JetStream (safe durability: fsync on every write)
# and the accounts of a policy file, plus an app's node, projections and sagas,
# each its own systemd service. The app is any binary built with `jetsource::App`
# (`package`, with its `projections` and `sagas`); the reference app is the default. It cannot run without authorization: `policy` and
# one of `environmentFile`/`credentialsFile` are required.
#
#   imports = [ jetsource.nixosModules.default ];
#   services.jetsource = {
#     enable = true;
#     policy = ./policy.toml;               # see dev/policy.toml
#     environmentFile = "/run/secrets/jetsource.env";
#     # NATS_USER=jetsource, NATS_PASSWORD=..., plus every `$X_PASSWORD` the
#     # policy names (nats-server reads them from its environment).
#   };
#
# Every jetsource service reconnects on its own, so the order of starts does not
# matter for correctness; they are ordered after nats anyway.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.jetsource;
  inherit (lib) mkEnableOption mkIf mkOption types;

  # The server's accounts, generated from the same policy the node enforces.
  accounts = pkgs.runCommand "jetsource-nats-accounts.conf" { } ''
    ${lib.getExe cfg.package} policy nats-config ${cfg.policy} --prefix '${cfg.prefix}' > $out
  '';
  natsConfig = pkgs.writeText "jetsource-nats.conf" ''
    listen: ${cfg.nats.listen}
    http: 127.0.0.1:${toString cfg.nats.monitorPort}
    jetstream {
      store_dir: "/var/lib/jetsource-nats"
      sync_interval: always
    }
    include ${accounts}
  '';

  # Each process's metrics and health address: the nodes first, then the
  # projections, then the sagas, from metrics.port on.
  metricsArgs = index: lib.optionals cfg.metrics.enable
    [ "--metrics-addr" "${cfg.metrics.address}:${toString (cfg.metrics.port + index)}" ];
  projectionIndex = p: cfg.nodes + lib.lists.findFirstIndex (x: x == p) 0 cfg.projections;
  sagaIndex = s: cfg.nodes + lib.length cfg.projections + lib.lists.findFirstIndex (x: x == s) 0 cfg.sagas;

  service = description: args: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ] ++ lib.optional cfg.nats.enable "jetsource-nats.service";
    wants = lib.optional cfg.nats.enable "jetsource-nats.service";
    environment = {
      NATS_URL = cfg.natsUrl;
      JETSOURCE_PREFIX = cfg.prefix;
      JETSOURCE_POLICY = toString cfg.policy;
    } // lib.optionalAttrs (cfg.credentialsFile != null) {
      NATS_CREDS = toString cfg.credentialsFile;
    };
    serviceConfig = {
      # Each process tells systemd itself when it serves, runs or stands by.
      Type = "notify";
      NotifyAccess = "main";
      EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
      ExecStart = "${lib.getExe cfg.package} ${lib.escapeShellArgs args}";
      DynamicUser = true;
      Restart = "always";
      RestartSec = 2;
      # SIGTERM: stop intake, finish in-flight work, exit 0.
      KillSignal = "SIGTERM";
      TimeoutStopSec = 30;
      NoNewPrivileges = true;
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
    };
  };
in
{
  options.services.jetsource = {
    enable = mkEnableOption "jetsource: event-sourced domains on NATS JetStream";

    package = mkOption {
      type = types.package;
      description = "The jetsource package.";
    };

    natsUrl = mkOption {
      type = types.str;
      default = "nats://127.0.0.1:4222";
      description = "Server URL(s), comma-separated.";
    };

    prefix = mkOption {
      type = types.str;
      default = "";
      description = "Subject prefix of this deployment (default none).";
    };

    policy = mkOption {
      type = types.path;
      description = ''
        Who may do what (TOML, see dev/policy.toml): the server's accounts are
        generated from it and every node enforces it. Required.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        systemd EnvironmentFile for nats-server and every jetsource process:
        NATS_USER/NATS_PASSWORD of the policy's service user, and each `$X_PASSWORD`
        the policy names. Kept out of the Nix store.
      '';
    };

    credentialsFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "NATS credentials file (JWT + nkey seed) for every jetsource process, instead of a password.";
    };

    nodes = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "How many `jetsource node` processes (stateless; they share the work).";
    };

    nodeArgs = mkOption {
      type = types.listOf types.str;
      default = [ "--durability" "safe" ];
      description = "Extra arguments of `jetsource node`.";
    };

    projections = mkOption {
      type = types.listOf types.str;
      default = [ "person_directory" "organizations" "offers" ];
      description = "Projections to run, one service each.";
    };

    sagas = mkOption {
      type = types.listOf types.str;
      default = [ "hiring" ];
      description = "Sagas to run, one service each.";
    };

    nats.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Run a local nats-server with JetStream, fsyncing every write, with the policy's accounts.";
    };

    metrics.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Serve Prometheus metrics, /healthz and /readyz from every jetsource process.";
    };

    metrics.address = mkOption {
      type = types.str;
      default = "127.0.0.1";
      description = "Address the metrics listen on.";
    };

    metrics.port = mkOption {
      type = types.port;
      default = 9464;
      description = "Port of the first node's metrics; the other nodes, then the projections, then the sagas take the next ones.";
    };

    nats.monitorPort = mkOption {
      type = types.port;
      default = 8222;
      description = "The local nats-server's monitoring port (on loopback).";
    };

    nats.listen = mkOption {
      type = types.str;
      default = "127.0.0.1:4222";
      description = "Where the local nats-server listens (add TLS before leaving loopback).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [{
      assertion = cfg.environmentFile != null || cfg.credentialsFile != null;
      message = "services.jetsource: set environmentFile (passwords) or credentialsFile; jetsource never runs without authentication";
    }];

    systemd.services =
      lib.optionalAttrs cfg.nats.enable {
        jetsource-nats = {
          description = "nats-server for jetsource (JetStream, policy accounts)";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          serviceConfig = {
            ExecStart = "${lib.getExe pkgs.nats-server} -c ${natsConfig}";
            EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
            DynamicUser = true;
            StateDirectory = "jetsource-nats";
            Restart = "always";
            KillSignal = "SIGTERM";
            NoNewPrivileges = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            PrivateTmp = true;
          };
        };
      }
      //
      lib.listToAttrs (lib.genList
        (i: lib.nameValuePair "jetsource-node-${toString i}"
          (service "jetsource node ${toString i}" ([ "node" ] ++ metricsArgs i ++ cfg.nodeArgs)))
        cfg.nodes)
      // lib.listToAttrs (map
        (p: lib.nameValuePair "jetsource-project-${p}"
          (service "jetsource projection ${p}" ([ "project" p ] ++ metricsArgs (projectionIndex p))))
        cfg.projections)
      // lib.listToAttrs (map
        (s: lib.nameValuePair "jetsource-saga-${s}"
          (service "jetsource saga ${s}" ([ "saga" s ] ++ metricsArgs (sagaIndex s))))
        cfg.sagas);
  };
}
