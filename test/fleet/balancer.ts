/**
 * A load balancer in front of the replicas, as an ingress without session affinity: each request
 * goes to the replica `route` picks (by default the next one, round robin), its body and the answer
 * streamed through unchanged, the Host header kept (the public URL's). Records which replica served
 * each request.
 */
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as the balancer passed it on. */
export interface Served {
  method: string;
  path: string;
  replica: number;
  status: number;
}

/** A running balancer. */
export interface Balancer {
  /** Where it listens: the public URL the replicas are configured with. */
  url: string;
  /** The replicas' own addresses; set once they listen. */
  targets: string[];
  /** The replica (index into `targets`) for a request; `undefined`: the next one, round robin. */
  route: (req: IncomingMessage, path: string) => number | undefined;
  /** Every request passed on, in order. */
  served: Served[];
  close(): Promise<void>;
}

/** Starts a balancer on a free loopback port (no targets yet). */
export async function startBalancer(): Promise<Balancer> {
  let next = 0;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://balancer').pathname;
    const replica = balancer.route(req, path) ?? next++ % balancer.targets.length;
    const entry: Served = { method: req.method ?? 'GET', path, replica, status: 0 };
    balancer.served.push(entry);
    const forwarded = request(`${balancer.targets[replica]}${req.url ?? '/'}`, { method: req.method, headers: req.headers, agent: false }, (answer) => {
      entry.status = answer.statusCode ?? 0;
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forwarded.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    // The client went away (an SSE stream closed): so does the request to the replica.
    res.on('close', () => forwarded.destroy());
    req.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const balancer: Balancer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    targets: [],
    route: () => undefined,
    served: [],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return balancer;
}
