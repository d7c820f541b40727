# NixOS module: nats-server with JetStream (safe durability: fsync on every write)
# plus jetsource's node, projections and sagas, each its own systemd service.
#
#   imports = [ jetsource.nixosModules.default ];
#   services.jetsource.enable = true;
#
# Every jetsource service reconnects on its own, so the order of starts does not
# matter for correctness; they are ordered after nats anyway.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.jetsource;
  inherit (lib) mkEnableOption mkIf mkOption types;

  service = description: args: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ] ++ lib.optional cfg.nats.enable "nats.service";
    wants = lib.optional cfg.nats.enable "nats.service";
    environment = {
      NATS_URL = cfg.natsUrl;
      JETSOURCE_PREFIX = cfg.prefix;
    } // lib.optionalAttrs (cfg.credentialsFile != null) {
      NATS_CREDS = toString cfg.credentialsFile;
    };
    serviceConfig = {
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

    credentialsFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "NATS credentials file (JWT + nkey seed) for every jetsource process.";
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
      description = "Run a local nats-server with JetStream, fsyncing every write.";
    };
  };

  config = mkIf cfg.enable {
    services.nats = mkIf cfg.nats.enable {
      enable = true;
      jetstream = true;
      settings = {
        host = "127.0.0.1";
        jetstream.sync_interval = "always";
      };
    };

    systemd.services =
      lib.listToAttrs (lib.genList
        (i: lib.nameValuePair "jetsource-node-${toString i}"
          (service "jetsource node ${toString i}" ([ "node" ] ++ cfg.nodeArgs)))
        cfg.nodes)
      // lib.listToAttrs (map
        (p: lib.nameValuePair "jetsource-project-${p}"
          (service "jetsource projection ${p}" [ "project" p ]))
        cfg.projections)
      // lib.listToAttrs (map
        (s: lib.nameValuePair "jetsource-saga-${s}"
          (service "jetsource saga ${s}" [ "saga" s ]))
        cfg.sagas);
  };
}
