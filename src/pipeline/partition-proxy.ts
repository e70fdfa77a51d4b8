/**
 * A loopback TCP relay in front of the cluster node that owns one partition's slot. The
 * partition's processes connect to the relay as to a single server; when a failover moves the
 * slot, retarget() cuts every relayed connection and sends the new ones to the promoted replica,
 * so their clients reconnect (as they do after a Redis restart) to the node that now owns it.
 * It relays bytes only: TLS and AUTH pass through it between the clients and the node.
 */
import { connect, createServer, type Socket } from "node:net";

export interface PartitionProxy {
  /** What the partition's clients connect to (plain, no password: for the run's own probes). */
  url: string;
  port: number;
  /** The node's port the relay forwards to now, and its host. */
  readonly target: number;
  readonly targetHost: string;
  retarget(port: number, host?: string): void;
  close(): Promise<void>;
}

export async function startPartitionProxy(
  targetPort: number,
  targetHost = "127.0.0.1",
): Promise<PartitionProxy> {
  let target = targetPort;
  let host = targetHost;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(target, host);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", end);
      socket.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const cut = () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get target() {
      return target;
    },
    get targetHost() {
      return host;
    },
    retarget(next, nextHost = host) {
      target = next;
      host = nextHost;
      cut();
    },
    close() {
      cut();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
