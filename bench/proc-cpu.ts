// CPU accounting from Linux /proc for bench/documents-list.ts and bench/rls-scale.ts: over a measured period, how
// many cores the machine used in all, how many went to named groups of processes (a server's Node process, the
// embedded PostgreSQL's process tree, the bench itself), and how many to everything else. On a small shared
// machine the last figure tells a disturbed run from a clean one; divided by requests, the groups show where each
// request's CPU goes.
import { readdirSync, readFileSync } from "node:fs";

const USER_HZ = 100; // the unit of /proc/stat and /proc/<pid>/stat on Linux

/** A process whose own CPU counts (`descendants: false`) or whose descendants' CPU counts (`true`). */
export interface CpuGroup {
  readonly pid: number;
  readonly descendants: boolean;
}

export interface CpuSnapshot {
  readonly at: number;
  /** Machine-wide busy ticks: user, nice, system, irq, softirq. */
  readonly busy: number;
  readonly groups: ReadonlyMap<string, number>;
}

export interface CpuUse {
  readonly seconds: number;
  /** In cores (1 = one core busy for the whole period). */
  readonly all: number;
  readonly groups: ReadonlyMap<string, number>;
  /** Everything outside the groups. */
  readonly other: number;
}

export function cpuSnapshot(groups: Readonly<Record<string, CpuGroup>>): CpuSnapshot | null {
  try {
    const [, user, nice, system, , , irq, softirq] = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).map(Number);
    const ticks = new Map<number, number>();
    const children = new Map<number, number[]>();
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        const pid = Number(entry);
        const ppid = Number(fields[1]);
        // utime + stime + cutime + cstime: reaped children count towards their parent.
        ticks.set(pid, Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]));
        children.set(ppid, [...(children.get(ppid) ?? []), pid]);
      } catch {
        // the process ended while we looked
      }
    }
    const totals = new Map<string, number>();
    for (const [name, { pid, descendants }] of Object.entries(groups)) {
      if (!descendants) {
        totals.set(name, ticks.get(pid) ?? 0);
        continue;
      }
      let sum = 0;
      const queue = [...(children.get(pid) ?? [])];
      while (queue.length > 0) {
        const next = queue.pop()!;
        sum += ticks.get(next) ?? 0;
        queue.push(...(children.get(next) ?? []));
      }
      totals.set(name, sum);
    }
    const busy = user! + nice! + system! + irq! + softirq!;
    return Number.isNaN(busy) ? null : { at: performance.now(), busy, groups: totals };
  } catch {
    return null; // no /proc: not Linux
  }
}

export function cpuBetween(a: CpuSnapshot | null, b: CpuSnapshot | null): CpuUse | null {
  if (!a || !b || b.at <= a.at) return null;
  const seconds = (b.at - a.at) / 1000;
  const cores = (ticks: number) => ticks / USER_HZ / seconds;
  const groups = new Map([...b.groups].map(([name, value]) => [name, cores(value - (a.groups.get(name) ?? 0))]));
  const all = cores(b.busy - a.busy);
  const inGroups = [...groups.values()].reduce((sum, n) => sum + n, 0);
  return { seconds, all, groups, other: Math.max(0, all - inGroups) };
}

/** Above this many cores of other work during a measured period, a run is marked disturbed. */
export const DISTURBED_CORES = 0.2;
