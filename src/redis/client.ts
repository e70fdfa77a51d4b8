/**
 * node-redis's createClient() builds a class with a method for every command, its modules' and
 * MULTI's whenever its options differ from the previous call's (a cache of one entry, compared
 * as JSON): 20-45 ms of CPU per client, and a check run opens a dozen of them. newClient() makes
 * the same client from the class built for the first one, as duplicate() does, with exactly
 * the options given. Only for options that shape no class of their own (RESP, modules,
 * functions and scripts are left at their defaults).
 */
import { createClient, type RedisClientOptions } from "redis";

export type PlainClientOptions = Omit<
  RedisClientOptions,
  "RESP" | "modules" | "functions" | "scripts"
>;
/** What createClient() returns for such options (RESP3). */
export type Client = ReturnType<typeof createClient<{}, {}, {}, 3, {}>>;

let first: Client | undefined;

export function newClient(options: PlainClientOptions): Client {
  if (!first) {
    first = createClient({ ...options });
    return first;
  }
  // What createClient() does once it has the class: an instance of it, behind an object whose
  // prototype it is, with the `redis` package's modules in its options.
  const Class = Object.getPrototypeOf(first).constructor as new (options: unknown) => object;
  const modules = (first.options as { modules?: object } | undefined)?.modules;
  return Object.create(new Class({ ...options, modules: { ...modules } })) as Client;
}
