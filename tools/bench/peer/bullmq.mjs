// The peer Wharf's throughput is compared with (`wharf bench --only peer_bullmq`): BullMQ on a
// Redis the bench started. Two processes, as a deployment would have them:
//
//   node bullmq.mjs worker   <port> <queue> <n> <concurrency>
//     prints {"ready":true} once connected, then, after its n-th completed job,
//     {"done_ms": <epoch ms>, "completed": n} and exits.
//   node bullmq.mjs producer <port> <queue> <n> <outstanding> <payload bytes>
//     prints {"ready":true} once connected and waits for a line on stdin (so the bench reads the
//     CPU counters after node has started), then adds n jobs, one `Queue.add` each with `outstanding` of them in flight (as the Wharf
//     scenario has 64 HTTP connections each with one request in flight), then prints
//     {"start_ms": <epoch ms of the first add>, "seconds": ..., "p50_ms": ..., "p99_ms": ...}.
//
// Both stay until their stdin closes, so the bench reads their CPU time while they still exist.
//
// The job is a no-op, like `demo.echo`; BullMQ's defaults otherwise (completed jobs are kept, as
// Wharf keeps every task's history).
import { Queue, Worker } from 'bullmq';

const [mode, port, queueName, nArg, widthArg, payloadArg] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null };
const n = Number(nArg);
const now = () => performance.timeOrigin + performance.now();
const stdinClosed = () => new Promise((resolve) => {
  process.stdin.on('end', resolve);
  process.stdin.resume();
});

async function worker(concurrency) {
  let completed = 0;
  const w = new Worker(queueName, async () => {}, { connection, concurrency, autorun: false });
  w.on('completed', () => {
    completed += 1;
    if (completed === n) {
      console.log(JSON.stringify({ done_ms: now(), completed }));
      w.close().then(stdinClosed).then(() => process.exit(0));
    }
  });
  w.on('error', (e) => console.error(`worker: ${e}`));
  await w.waitUntilReady();
  console.log(JSON.stringify({ ready: true }));
  await w.run();
}

async function producer(outstanding, payloadBytes) {
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  console.log(JSON.stringify({ ready: true }));
  await new Promise((resolve) => process.stdin.once('data', resolve));
  const data = { message: 'x'.repeat(payloadBytes) };
  const latencies = new Float64Array(n);
  let next = 0;
  const start = now();
  async function lane() {
    while (next < n) {
      const i = next++;
      const at = now();
      await queue.add('echo', data);
      latencies[i] = now() - at;
    }
  }
  await Promise.all(Array.from({ length: outstanding }, lane));
  const seconds = (now() - start) / 1000;
  latencies.sort();
  const pct = (p) => latencies[Math.min(n - 1, Math.floor((n * p) / 100))];
  console.log(JSON.stringify({ start_ms: start, seconds, p50_ms: pct(50), p99_ms: pct(99) }));
  await queue.close();
  await stdinClosed();
}

if (mode === 'worker') {
  await worker(Number(widthArg));
} else if (mode === 'producer') {
  await producer(Number(widthArg), Number(payloadArg));
} else {
  console.error('usage: bullmq.mjs worker|producer <port> <queue> <n> <width> [payload bytes]');
  process.exit(2);
}
