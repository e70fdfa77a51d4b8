/**
 * A throwaway Redis Cluster on loopback: three primaries with one replica each, six
 * redis-server processes of the installed Debian/Homebrew redis, each behind the same stdin
 * watchdog as the private server (src/redis/server.ts), so that none outlives this process even
 * when it is SIGKILLed. For lesson 15's check, the pipeline's cluster runs and their tests.
 * With `tls` every node is TLS-only (no plain port): clients, the cluster bus and replication
 * all speak TLS, checked against one CA made for the cluster, and so does every command the
 * harness sends (redis-cli --cluster create included).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { connect as connectTcp, type Socket } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as connectTls } from "node:tls";
import { removeOnExit } from "../check/cleanup.ts";
import { childEnded } from "../child-ended.ts";
import { makeScratch, sweepOnce } from "../scratch.ts";
import { encode, parseReply, type Reply } from "./raw.ts";
import {
  freePort,
  type Launched,
  launch,
  RedisNotInstalled,
  redisServerVersion,
} from "./server.ts";
import { makeAuthority } from "./tls-server.ts";

export interface ClusterNode {
  /** The port clients connect to: the TLS port of a TLS cluster. */
  port: number;
  /** redis://, or rediss:// for a TLS cluster (connect with `tls.servername` and `tls.ca`). */
  url: string;
  dir: string;
}

/** How to verify a TLS cluster's nodes: they share one certificate, for a host name only. */
export interface ClusterTls {
  /** The name on the nodes' certificate: no IP is on it, so a client must give this name. */
  servername: string;
  /** The PEM text of the CA that signed it, and its file (REDIS_CA, redis-cli --cacert). */
  ca: string;
  caFile: string;
}

/** What every command the harness sends to a node needs: the password, TLS. */
interface Access {
  password?: string;
  tls?: ClusterTls;
}

export interface LocalCluster {
  /** Every node, primaries and replicas, in the order they were started. */
  nodes: ClusterNode[];
  /** What createCluster({ rootNodes }) needs. */
  rootNodes: { url: string }[];
  version: string;
  /** Set for a TLS-only cluster. */
  tls?: ClusterTls;
  /** The hash slot of `key`, as a live node computes it (CLUSTER KEYSLOT). */
  keySlot(key: string): Promise<number>;
  /** The ports of the primary serving `slot` and of its replicas, as a live node sees it. */
  servers(slot: number): Promise<number[]>;
  /** SIGKILLs one node (a crashed machine); stop() still cleans up after it. */
  kill(port: number): Promise<void>;
  /**
   * SIGKILLs the primary serving `slot` and waits until its replica serves it, as every live
   * node sees it. The cluster elects the replica after the node timeout; when that takes longer
   * than `takeoverAfterMs`, the replica is told CLUSTER FAILOVER TAKEOVER (no vote needed).
   */
  failover(
    slot: number,
    options?: { takeoverAfterMs?: number; timeoutMs?: number },
  ): Promise<Failover>;
  stop(): Promise<void>;
}

export interface Failover {
  killed: number;
  promoted: number;
  /** "election": the cluster failed the primary over by itself; "takeover": we told it to. */
  how: "election" | "takeover";
  ms: number;
}

export interface ClusterOptions {
  primaries?: number;
  replicasPerPrimary?: number;
  /**
   * How long a node may be unreachable before its replica takes over. Well above a loaded
   * machine's pauses: a node that merely answers late must not be failed over while starting.
   */
  nodeTimeoutMs?: number;
  /**
   * Every node requires this password once the cluster is up (requirepass, and masterauth for
   * its replication link), like a managed cluster; set after `redis-cli --cluster create` and
   * never on a command line, where `ps` would show it.
   */
  password?: string;
  /**
   * TLS only: every node listens on a TLS port alone (`port 0`), with TLS on the cluster bus and
   * for replication, its certificate from a CA made for this cluster and removed by stop().
   */
  tls?: boolean;
}

/** The host name on a TLS cluster's certificate: it resolves nowhere, clients give it as SNI. */
export const CLUSTER_TLS_NAME = "cluster.workbook.test";

/** Oldest server this harness supports: `cluster-port` (the bus on a port of our choice) is 7.0. */
export const CLUSTER_MIN_REDIS = "7.0";

/**
 * Sends `args` (after AUTH when there is a password) to the node on `port` on a connection of
 * its own, over TLS for a TLS cluster; resolves with the reply to `args`.
 */
function ask(port: number, args: string[], access: Access = {}): Promise<Reply> {
  const commands = access.password ? [["AUTH", access.password], args] : [args];
  const { tls } = access;
  const socket: Socket = tls
    ? connectTls({ host: "127.0.0.1", port, ca: [tls.ca], servername: tls.servername })
    : connectTcp({ host: "127.0.0.1", port });
  return new Promise<Reply>((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const replies: Reply[] = [];
    // A node that accepts but never answers (stopped by SIGSTOP, overloaded) must not hang a loop.
    socket.setTimeout(5000, () => socket.destroy(new Error(`port ${port} did not answer`)));
    socket.once(tls ? "secureConnect" : "connect", () =>
      socket.write(commands.map(encode).join("")),
    );
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (let parsed = parseReply(buffer); parsed; parsed = parseReply(buffer)) {
        replies.push(parsed.reply);
        buffer = buffer.subarray(parsed.end);
        if (replies.length === commands.length) {
          resolve(parsed.reply);
          socket.destroy();
          return;
        }
      }
    });
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("connection closed")));
  });
}

/** The hash slot of `key`, as the node on `port` computes it (CLUSTER KEYSLOT). */
export async function keySlot(port: number, key: string, access: Access = {}): Promise<number> {
  return Number(await ask(port, ["CLUSTER", "KEYSLOT", key], access));
}

/** The lines of CLUSTER INFO / INFO as a map. */
function fields(reply: Reply): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of String(reply).split("\r\n")) {
    const at = line.indexOf(":");
    if (at > 0) map.set(line.slice(0, at), line.slice(at + 1));
  }
  return map;
}

/**
 * The ports of the primary serving `slot` and of its replicas, as the node on `port` sees it in
 * CLUSTER NODES ("<id> <ip>:<port>@<bus> <flags> <primary id or -> ... <slot ranges>"). Not
 * CLUSTER SLOTS: that leaves out a replica until its first offset has been gossiped.
 */
export async function servers(port: number, slot: number, access: Access = {}): Promise<number[]> {
  const lines = String(await ask(port, ["CLUSTER", "NODES"], access).catch(() => ""))
    .trim()
    .split("\n")
    .map((line) => line.split(" "));
  const portOf = (fields: string[]) => Number(/:(\d+)@/.exec(fields[1] ?? "")?.[1]);
  const primary = lines.find(
    (fields) =>
      fields[2]?.includes("master") &&
      !fields[2].includes("fail") &&
      fields.slice(8).some((range) => {
        const [start = "", end = start] = range.split("-");
        return Number(start) <= slot && slot <= Number(end);
      }),
  );
  if (!primary) return [];
  const replicas = lines.filter(
    (fields) => fields[2]?.includes("slave") && fields[3] === primary[0],
  );
  return [primary, ...replicas].map(portOf);
}

/** How many nodes CLUSTER NODES (as one node sees it) lists as primaries and as replicas. */
function roles(reply: Reply): { primaries: number; replicas: number } {
  const flags = String(reply)
    .trim()
    .split("\n")
    .map((line) => line.split(" ")[2] ?? "");
  return {
    primaries: flags.filter((f) => f.includes("master")).length,
    replicas: flags.filter((f) => f.includes("slave")).length,
  };
}

/**
 * Whether every node says the cluster is ok, sees every other node in its final role, and every
 * replica has finished its first sync with its primary: only then does a write reach a replica,
 * and a failover find one to promote.
 */
async function settled(
  ports: number[],
  primaries: number,
  replicas: number,
  access: Access,
): Promise<boolean> {
  let attached = 0;
  for (const port of ports) {
    const info = fields(await ask(port, ["CLUSTER", "INFO"], access).catch(() => ""));
    if (info.get("cluster_state") !== "ok") return false;
    const seen = roles(await ask(port, ["CLUSTER", "NODES"], access).catch(() => ""));
    if (seen.primaries !== primaries || seen.replicas !== replicas) return false;
    const replication = fields(await ask(port, ["INFO", "replication"], access).catch(() => ""));
    if (replication.get("role") === "slave") {
      if (replication.get("master_link_status") !== "up") return false;
      attached++;
    }
  }
  return attached === replicas;
}

/** Runs redis-cli --cluster create; rejects with its output when it fails. */
async function create(
  ports: number[],
  replicasPerPrimary: number,
  tls: ClusterTls | undefined,
): Promise<void> {
  const cli = spawn(
    "redis-cli",
    [
      ...(tls ? ["--tls", "--cacert", tls.caFile, "--sni", tls.servername] : []),
      "--cluster",
      "create",
      ...ports.map((port) => `127.0.0.1:${port}`),
      "--cluster-replicas",
      String(replicasPerPrimary),
      "--cluster-yes",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  cli.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  cli.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const ended = childEnded(cli, 1000);
  const timer = setTimeout(() => cli.kill("SIGKILL"), 20_000);
  const { code, signal } = await ended;
  clearTimeout(timer);
  if (code !== 0) {
    throw new Error(
      `redis-cli --cluster create failed (${code ?? signal}):\n${output.slice(-2000)}`,
    );
  }
}

/**
 * Starts the cluster and waits until it serves every slot with every replica in sync. The caller
 * must call stop(); the exit hook and each node's watchdog back that up.
 */
export async function startCluster(options: ClusterOptions = {}): Promise<LocalCluster> {
  const version = redisServerVersion();
  if (!version) throw new RedisNotInstalled();
  sweepOnce();
  const primaries = options.primaries ?? 3;
  const replicasPerPrimary = options.replicasPerPrimary ?? 1;
  const count = primaries * (1 + replicasPerPrimary);
  const nodes: (ClusterNode & { server: Launched })[] = [];
  // The certificates live apart from the nodes' directories, and go with them.
  const certs = options.tls ? makeScratch("redis") : undefined;
  const forgetCerts = certs ? removeOnExit(certs) : () => false;
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.server.end()));
    for (const node of nodes) rmSync(node.dir, { recursive: true, force: true });
    if (certs) rmSync(certs, { recursive: true, force: true });
    forgetCerts();
  };
  let tls: (ClusterTls & { certFile: string; keyFile: string }) | undefined;
  try {
    if (certs) {
      const authority = makeAuthority(certs, "cluster");
      // The bus asks every node that connects to it for a client certificate, whatever
      // tls-auth-clients says: the nodes' one certificate serves both ends.
      const node = authority.issue("node", [CLUSTER_TLS_NAME], { clientAuth: true });
      tls = {
        servername: CLUSTER_TLS_NAME,
        ca: authority.cert,
        caFile: authority.certFile,
        certFile: node.certFile,
        keyFile: node.keyFile,
      };
    }
    const taken = new Set<number>();
    // Each node joins `nodes` as soon as it runs, so that stop() finds it whatever fails later.
    await Promise.all(
      Array.from({ length: count }, async () => {
        const node = await startNode(taken, options.nodeTimeoutMs ?? 5000, tls);
        if (node) nodes.push(node);
      }),
    );
    if (nodes.length < count) throw new Error("A redis-server of the cluster did not start.");
    const ports = nodes.map((n) => n.port);
    await create(ports, replicasPerPrimary, tls);
    const deadline = Date.now() + 20_000;
    while (!(await settled(ports, primaries, primaries * replicasPerPrimary, { tls }))) {
      if (Date.now() > deadline) throw new Error("The cluster did not reach cluster_state:ok.");
      await sleep(50);
    }
    if (options.password) {
      const secret = options.password;
      // masterauth first: a replica whose primary already asks for the password can answer it.
      for (const args of [
        ["CONFIG", "SET", "masterauth", secret],
        ["CONFIG", "SET", "requirepass", secret],
      ]) {
        for (const port of ports) {
          const reply = await ask(port, args, { tls });
          if (reply instanceof Error) throw reply;
        }
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const access: Access = {
    password: options.password,
    tls: tls && { servername: tls.servername, ca: tls.ca, caFile: tls.caFile },
  };
  let stopped: Promise<void> | undefined;
  const killed = new Set<number>();
  const kill = async (port: number) => {
    killed.add(port);
    await nodes.find((n) => n.port === port)?.server.kill();
  };
  const live = () => nodes.map((n) => n.port).filter((port) => !killed.has(port));
  return {
    nodes: nodes.map(({ port, url, dir }) => ({ port, url, dir })),
    rootNodes: nodes.map((n) => ({ url: n.url })),
    version,
    tls: access.tls,
    keySlot: (key) => keySlot(live()[0] ?? 0, key, access),
    servers: (slot) => servers(live()[0] ?? 0, slot, access),
    kill,
    async failover(slot, { takeoverAfterMs = 3000, timeoutMs = 30_000 } = {}) {
      const [primary, replica] = await servers(live()[0] ?? 0, slot, access);
      if (primary === undefined || replica === undefined) {
        throw new Error(`No primary with a replica serves slot ${slot}.`);
      }
      const started = Date.now();
      await kill(primary);
      let how: Failover["how"] = "election";
      for (;;) {
        const role = fields(
          await ask(replica, ["INFO", "replication"], access).catch(() => ""),
        ).get("role");
        if (role === "master") {
          const views = await Promise.all(live().map((port) => servers(port, slot, access)));
          if (views.every((view) => view[0] === replica)) break;
        } else if (how === "election" && Date.now() - started > takeoverAfterMs) {
          how = "takeover";
          // Not fatal when refused or unanswered: on a loaded machine the cluster's own election
          // can win the race to it (the replica, a primary by then, refuses with "ERR You should
          // send CLUSTER FAILOVER to a replica"), or the answer outlasts ask()'s 5 s; either way
          // the loop goes on looking until the slot is served or timeoutMs is up.
          await ask(replica, ["CLUSTER", "FAILOVER", "TAKEOVER"], access).catch(() => undefined);
        }
        if (Date.now() - started > timeoutMs) {
          throw new Error(`Port ${replica} did not take over slot ${slot} from ${primary}.`);
        }
        await sleep(50);
      }
      return { killed: primary, promoted: replica, how, ms: Date.now() - started };
    },
    stop() {
      stopped ??= stop();
      return stopped;
    },
  };
}

/**
 * One node on a free client port and a free bus port. Another process may bind a port between
 * our probe and the server's bind (the self-verification starts several clusters at once), and
 * a loaded machine starts slowly: a node that does not answer is tried again on other ports.
 */
async function startNode(
  taken: Set<number>,
  nodeTimeoutMs: number,
  tls: (ClusterTls & { certFile: string; keyFile: string }) | undefined,
): Promise<(ClusterNode & { server: Launched }) | undefined> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await unusedPort(taken);
    const bus = await unusedPort(taken);
    const dir = makeScratch("redis");
    const server = launch(
      port,
      dir,
      [
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        String(bus),
        "--cluster-config-file",
        join(dir, "nodes.conf"),
        "--cluster-node-timeout",
        String(nodeTimeoutMs),
        // A replica's first sync starts at once, not after the default 5 s wait for more replicas.
        "--repl-diskless-sync-delay",
        "0",
        // A replica may take over however long its link was down: a failover test kills a
        // primary whenever it needs to.
        "--cluster-replica-validity-factor",
        "0",
        // The client port becomes the TLS port and the plain one closes (a later --port wins).
        ...(tls
          ? [
              "--port",
              "0",
              "--tls-port",
              String(port),
              "--tls-cluster",
              "yes",
              "--tls-replication",
              "yes",
              "--tls-cert-file",
              tls.certFile,
              "--tls-key-file",
              tls.keyFile,
              "--tls-ca-cert-file",
              tls.caFile,
              // Clients show no certificate of their own, as on a managed cluster.
              "--tls-auth-clients",
              "no",
            ]
          : []),
      ],
      {},
    );
    if (await answers(port, server.child, { tls }, 10_000)) {
      return { port, url: `${tls ? "rediss" : "redis"}://127.0.0.1:${port}`, dir, server };
    }
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
  return undefined;
}

/** Whether the node on `port` answers PING before `timeoutMs`; false once its process ended. */
async function answers(
  port: number,
  child: ChildProcess,
  access: Access,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
    if ((await ask(port, ["PING"], access).catch(() => undefined)) === "PONG") return true;
    await sleep(25);
  }
  return false;
}

/** A port free now and not yet handed to another node of this cluster. */
async function unusedPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (!taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
}
