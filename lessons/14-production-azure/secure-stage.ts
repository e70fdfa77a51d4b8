/**
 * Lesson 14: Production on Azure.
 *
 * The OCR stage moves to Azure: TLS on port 6380 or 10000, a user of its own that may touch only
 * its streams, and a password that is an Entra ID token, replaced before it expires. Fill in
 * the four functions below and run `npm run check -- 14` after each one.
 */
import { createClient, type RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** Where and as whom a worker connects: what the Azure portal and Entra ID give you. */
export interface StageConnection {
  /** The address to connect to (on Azure: <name>.redis.cache.windows.net). */
  host: string;
  /** The TLS port (on Azure: 6380, or 10000 for Azure Managed Redis). */
  port: number;
  /** PEM text of the certificate authority that signed the server's certificate. */
  ca: string;
  /** The name the server's certificate is issued for, which may differ from `host`. */
  servername: string;
  /** The ACL user (with Entra ID: the object id of the identity). */
  username: string;
  /**
   * The current password (with Entra ID: an access token). It changes while the worker runs:
   * ask again for every new connection, never keep the first answer.
   */
  password(): Promise<string>;
}

/** The names one stage worker uses. */
export interface StageNames {
  /** This stage's stream, read through the group. */
  input: string;
  group: string;
  consumer: string;
  /** The next stage's stream: one entry { doc } per finished document. */
  output: string;
  /** The status channel: one JSON StatusEvent per finished document. */
  status: string;
}

export interface StatusEvent {
  doc: string;
  state: "done";
}

export interface Stoppable {
  /** Finishes the document in hand, stops, and closes what was opened. */
  stop(): Promise<void>;
}

/**
 * A client (not connected yet) for `conn`: TLS that checks the server's certificate against
 * `conn.ca` for the name `conn.servername`, authenticated as `conn.username` with a password
 * asked from `conn.password()` each time a connection is made. A login refused before the
 * client was first ready (a wrong secret) ends the attempt: connect() rejects instead of
 * retrying for ever.
 */
export function stageClient(conn: StageConnection): Redis {
  // TODO: see the lesson text.
  throw new Error("TODO: stageClient");
}

/**
 * The ACL rules of the stage worker's user, as ACL SETUSER arguments (the check adds `reset`,
 * `on` and the password): read and acknowledge `input` through the group, add to `output`,
 * publish on `status`, and nothing else.
 */
export function stageAcl(names: StageNames): string[] {
  // TODO: see the lesson text.
  throw new Error("TODO: stageAcl");
}

/**
 * Starts the stage worker: takes documents from `input` through the group, calls `handle`,
 * then adds { doc } to `output`, acknowledges, and publishes { doc, state: "done" } on `status`.
 * It keeps going when its connection is dropped (a rotated password, a failover): node-redis
 * reconnects, and the loop reads again.
 */
export async function startStage(
  conn: StageConnection,
  names: StageNames,
  handle: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<Stoppable> {
  // TODO: see the lesson text.
  throw new Error("TODO: startStage");
}

/**
 * Subscribes to `channel` as `conn.username` and calls `onEvent` with each parsed StatusEvent,
 * through password rotations: a dropped subscriber reconnects and subscribes again. An
 * exception from `onEvent`, or from JSON.parse (a message typed by hand), is caught inside the
 * listener (node-redis 6.3 drops the rest of a read when a listener throws). If Redis refuses
 * the subscription (NOPERM), destroy the client and reject.
 */
export async function watchStatus(
  conn: StageConnection,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<Stoppable> {
  // TODO: see the lesson text.
  throw new Error("TODO: watchStatus");
}
