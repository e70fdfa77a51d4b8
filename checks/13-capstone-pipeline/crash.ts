/**
 * Simulates a worker dying in the middle of the learner's handOff(). The learner's code gets a
 * real node-redis client on the real server, seen through a Proxy that counts the commands that
 * change data ("writes": XADD, HSET, ..., and EXEC for a whole transaction). After write number
 * `crashAfter` has been applied, the connection is destroyed and every later call fails, the way
 * nothing more reaches Redis from a process killed with SIGKILL. Reads (WATCH, HEXISTS, ...)
 * pass through untouched.
 */
import type { Redis } from "../kit.ts";

const WRITES = new Set([
  "XADD",
  "XACK",
  "XDEL",
  "XTRIM",
  "XCLAIM",
  "XAUTOCLAIM",
  "HSET",
  "HSETNX",
  "HMSET",
  "HDEL",
  "HINCRBY",
  "SET",
  "SETNX",
  "DEL",
  "UNLINK",
  "INCR",
  "INCRBY",
  "EXPIRE",
  "PEXPIRE",
  "PUBLISH",
  "SPUBLISH",
  "LPUSH",
  "RPUSH",
  "SADD",
  "ZADD",
]);

export class SimulatedCrash extends Error {
  override name = "SimulatedCrash";
}

type Fn = (...args: unknown[]) => unknown;

export interface CrashingClient {
  client: Redis;
  /** The writes seen so far, e.g. ["HSET", "XADD", "EXEC"]. */
  writes: string[];
  crashed(): boolean;
}

/** `crashAfter` = Infinity: never crash, just count the writes. */
export function crashingClient(real: Redis, crashAfter: number): CrashingClient {
  const writes: string[] = [];
  let crashed = false;
  const dead = () => {
    throw new SimulatedCrash("the worker process died (simulated by the check)");
  };
  const wrote = (name: string) => {
    writes.push(name);
    if (writes.length >= crashAfter) {
      crashed = true;
      real.destroy();
      dead();
    }
  };

  const transaction = (multi: object): object => {
    const proxy: object = new Proxy(multi, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== "function") return value;
        const name = String(prop).toUpperCase();
        if (name === "EXEC" || name === "EXECASPIPELINE") {
          return async (...args: unknown[]) => {
            if (crashed) dead();
            const reply = await (value as Fn).apply(target, args);
            wrote("EXEC");
            return reply;
          };
        }
        return (...args: unknown[]) => {
          if (crashed) dead();
          const out = (value as Fn).apply(target, args);
          // Chained calls return the transaction itself: keep handing out the proxy.
          return out === target ? proxy : out;
        };
      },
    });
    return proxy;
  };

  const client = new Proxy(real, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== "function") return value;
      const name = String(prop).toUpperCase();
      if (name === "MULTI") {
        return (...args: unknown[]) => {
          if (crashed) dead();
          return transaction((value as Fn).apply(target, args) as object);
        };
      }
      return (...args: unknown[]) => {
        if (crashed) dead();
        const out = (value as Fn).apply(target, args);
        if (!(out instanceof Promise)) return out;
        const command =
          name === "SENDCOMMAND" && Array.isArray(args[0])
            ? String(args[0][0]).toUpperCase()
            : name;
        return out.then((reply: unknown) => {
          if (WRITES.has(command)) wrote(command);
          return reply;
        });
      };
    },
  });
  return { client, writes, crashed: () => crashed };
}
