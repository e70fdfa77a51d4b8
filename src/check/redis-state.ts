/**
 * What Redis held when a test failed, as the check captured it (checks/redis-state.ts), and how
 * the report shows it: the streams, groups, pending entries and values the test worked with,
 * next to the check's message, so a learner sees the state the message is about.
 */
import kleur from "kleur";
import { truncate } from "../ui/term.ts";

export interface StreamEntry {
  id: string;
  fields: Record<string, string>;
}

export interface PendingEntry {
  id: string;
  consumer: string;
  idleMs: number;
  deliveries: number;
}

export interface GroupState {
  name: string;
  lastDeliveredId: string;
  /** Entries not yet delivered to the group; null when Redis cannot tell (after an XDEL). */
  lag: number | null;
  /** Entries delivered and not yet acknowledged (XPENDING's count). */
  pending: number;
  consumers: number;
  /** The oldest pending entries, at most a page; `pending` says how many there are. */
  entries: PendingEntry[];
}

export type KeyState =
  | {
      key: string;
      type: "stream";
      length: number;
      lastId: string;
      /** The first and last few entries (the same ones when the stream is short). */
      first: StreamEntry[];
      last: StreamEntry[];
      groups: GroupState[];
      /** Groups left out of `groups`. */
      moreGroups: number;
    }
  | { key: string; type: "hash"; fields: Record<string, string>; moreFields: number }
  | { key: string; type: "string"; value: string; truncated: boolean }
  | { key: string; type: string; length: number };

export interface RedisState {
  keys: KeyState[];
  /** Keys the test used that exist but were left out, to keep the capture small. */
  moreKeys: number;
}

/**
 * The keys to show for a test: the names it built and the arguments its learner's commands
 * carried, in order of first mention, each once, and only those inside the run's prefix: against
 * a user's REDIS_URL nothing of theirs is ever read.
 */
export function candidateKeys(named: string[], touched: string[][], prefix: string): string[] {
  const all = [...named, ...touched.flat()];
  return [...new Set(all.filter((name) => name.startsWith(prefix) && name.length > prefix.length))];
}

/** How much one capture holds at most: the report needs a glimpse, not a dump. */
export const CAPTURE = {
  keys: 8,
  entries: 3,
  groups: 4,
  pending: 10,
  fields: 10,
  stringChars: 120,
};

/** How much of a capture shows under a failing test without --verbose: 80x24 stays readable. */
const COMPACT = { keys: 3, groups: 2, pending: 3, fields: 4 };

const WIDTH = 74;

function seconds(ms: number): string {
  return ms < 1000 ? `${ms}ms` : `${(ms / 1000).toFixed(1)}s`;
}

function fieldsText(fields: Record<string, string>): string {
  return Object.entries(fields)
    .map(([name, value]) => `${name}=${value}`)
    .join(" ");
}

function more(n: number, what: string, verbose: boolean): string[] {
  if (n <= 0) return [];
  return [kleur.dim(`… and ${n} more ${what}${verbose ? "" : " (--verbose shows more)"}`)];
}

function groupLines(group: GroupState, verbose: boolean): string[] {
  const lag = group.lag === null ? "unknown" : String(group.lag);
  const consumers = `${group.consumers} consumer${group.consumers === 1 ? "" : "s"}`;
  const delivered = verbose ? `, last delivered ${group.lastDeliveredId}` : "";
  const head = `group ${group.name}: lag ${lag}, pending ${group.pending}, ${consumers}${delivered}`;
  const shown = verbose ? group.entries : group.entries.slice(0, COMPACT.pending);
  const lines = [head];
  for (const p of shown) {
    lines.push(`  ${p.id}  ${p.consumer}  idle ${seconds(p.idleMs)}  delivered ${p.deliveries}×`);
  }
  lines.push(...more(group.pending - shown.length, "pending", verbose).map((l) => `  ${l}`));
  return lines;
}

function keyLines(state: KeyState, verbose: boolean): string[] {
  if (state.type === "stream" && "groups" in state) {
    const lines = [
      `stream ${state.key}`,
      `  length ${state.length}, last id ${state.lastId || "none"}`,
    ];
    if (verbose) {
      const seen = new Set<string>();
      for (const entry of [...state.first, ...state.last]) {
        if (seen.has(entry.id)) continue;
        seen.add(entry.id);
        lines.push(kleur.dim(`  ${entry.id}  ${fieldsText(entry.fields)}`));
      }
    }
    if (state.groups.length === 0 && state.moreGroups === 0) lines.push("  no consumer groups");
    const groups = verbose ? state.groups : state.groups.slice(0, COMPACT.groups);
    for (const group of groups) lines.push(...groupLines(group, verbose).map((l) => `  ${l}`));
    const hidden = state.groups.length - groups.length + state.moreGroups;
    lines.push(...more(hidden, "groups", verbose).map((l) => `  ${l}`));
    return lines;
  }
  if (state.type === "hash" && "fields" in state) {
    const entries = Object.entries(state.fields);
    const shown = verbose ? entries : entries.slice(0, COMPACT.fields);
    const rest = entries.length - shown.length + state.moreFields;
    return [
      `hash ${state.key}: ${fieldsText(Object.fromEntries(shown))}${rest > 0 ? ` … +${rest}` : ""}`,
    ];
  }
  if (state.type === "string" && "value" in state) {
    return [`string ${state.key}: ${JSON.stringify(state.value)}${state.truncated ? "…" : ""}`];
  }
  return [`${state.type} ${state.key}: ${"length" in state ? state.length : "?"} items`];
}

/**
 * The captured state as report lines (no indentation): a few keys, groups and pending entries
 * cut to the width without `verbose`; everything captured, uncut, with it.
 */
export function stateLines(state: RedisState, verbose = false): string[] {
  const keys = verbose ? state.keys : state.keys.slice(0, COMPACT.keys);
  const lines = keys.flatMap((k) => keyLines(k, verbose));
  lines.push(...more(state.keys.length - keys.length + state.moreKeys, "keys", verbose));
  if (lines.length === 0) return [];
  const all = [kleur.bold("In Redis after this check failed:"), ...lines.map((l) => `  ${l}`)];
  return verbose ? all : all.map((line) => truncate(line, WIDTH));
}
