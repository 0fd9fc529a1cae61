// cf-ssai-beacon: queues beacons over HTTP and consumes the beacon queue.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("ok");
    if (request.method === "POST" && url.pathname === "/beacon") {
      await env.BEACON_QUEUE.send(await request.json());
      return new Response("queued", { status: 202 });
    }
    return new Response("not found", { status: 404 });
  },
  async queue(batch) {
    for (const message of batch.messages) {
      console.log(`beacon fired: ${JSON.stringify(message.body)}`);
      message.ack();
    }
  },
};
