/** Linux process lookups for "nothing is left running" (the tests run where /proc exists). */
import { readdirSync, readFileSync } from "node:fs";

function stat(pid: number): { ppid: number; state: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut at the last ")".
    const [state = "", ppid = "0"] = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(ppid), state };
  } catch {
    return undefined;
  }
}

/** Running, not just a zombie waiting to be reaped. */
export function alive(pid: number): boolean {
  const info = stat(pid);
  return info !== undefined && info.state !== "Z";
}

export function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0/g, " ").trim();
  } catch {
    return "";
  }
}

/** The processes and all their descendants. */
export function family(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const info = stat(Number(entry));
    if (info) children.set(info.ppid, [...(children.get(info.ppid) ?? []), Number(entry)]);
  }
  const found = new Set<number>();
  const visit = (pid: number) => {
    if (found.has(pid)) return;
    found.add(pid);
    for (const child of children.get(pid) ?? []) visit(child);
  };
  for (const root of roots) visit(root);
  return [...found];
}
