// The part of autocannon's API that the benchmarks use. autocannon 9 ships no type declarations (and
// @types/autocannon trails at 7.x), so this declares just what we call, from autocannon's README and lib/.
declare module "autocannon" {
  export interface Options {
    url: string;
    title?: string;
    method?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS";
    headers?: Record<string, string>;
    body?: string | Buffer;
    /** Concurrent connections (default 10). */
    connections?: number;
    /** Seconds (default 10). */
    duration?: number;
    /** Seconds before a request counts as a timeout (default 10). */
    timeout?: number;
    pipelining?: number;
    /** Each response whose body differs from this is counted in `mismatches`. */
    expectBody?: string;
    /** Requests each connection sends in turn, starting over after the last (they override method, headers, body). */
    requests?: RequestSpec[];
  }

  export interface RequestSpec {
    method?: Options["method"];
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    /** Called with each response to this request, its body whole (autocannon collects it). */
    onResponse?: (status: number, body: string, context: Record<string, unknown>, headers: Record<string, string | string[]>) => void;
  }

  /** hdr-histogram-percentiles-obj: every value in the histogram's unit (ms for latency, per second otherwise). */
  export interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    /** Set on `requests` and `throughput` only. */
    total?: number;
    p0_001: number;
    p0_01: number;
    p0_1: number;
    p1: number;
    p2_5: number;
    p10: number;
    p25: number;
    p50: number;
    p75: number;
    p90: number;
    p97_5: number;
    p99: number;
    p99_9: number;
    p99_99: number;
    p99_999: number;
  }

  export interface Result {
    title?: string;
    url: string;
    connections: number;
    pipelining: number;
    /** Seconds. */
    duration: number;
    start: Date;
    finish: Date;
    /** Connection errors, timeouts included. */
    errors: number;
    timeouts: number;
    mismatches: number;
    non2xx: number;
    resets: number;
    "1xx": number;
    "2xx": number;
    "3xx": number;
    "4xx": number;
    "5xx": number;
    statusCodeStats: Record<string, { count: number }>;
    /** Milliseconds; `totalCount` is the number of responses recorded. */
    latency: Histogram & { totalCount: number };
    /** Requests completed per second (`total` is all of them; `sent` is requests sent). */
    requests: Histogram & { total: number; sent: number };
    /** Bytes per second. */
    throughput: Histogram;
  }

  export interface Instance extends NodeJS.EventEmitter {
    stop(): void;
  }

  /** Runs one benchmark; `callback` gets the aggregated result when it ends (or is stopped). */
  export default function autocannon(options: Options, callback: (error: Error | null, result: Result) => void): Instance;
}
