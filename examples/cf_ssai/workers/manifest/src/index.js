// cf-ssai manifest worker: serves HLS manifests with ad breaks kept in a per-channel Durable Object.
export class ChannelObject {
  constructor(state, env) {
    this.state = state;
    this.createdAt = Date.now();
    console.log(`🆕 DO Instance Created: id=${state.id}, name=${state.id.name ?? "?"}`);
  }

  async fetch(request) {
    const url = new URL(request.url);
    if (request.method === "POST" && url.pathname === "/cue") {
      const cue = await request.json();
      const version = ((await this.state.storage.get("version")) ?? 0) + 1;
      await this.state.storage.put({ version, cue });
      console.log(`💾 Persisted ad state to durable storage: version=${version}`);
      return Response.json({ ok: true, version });
    }
    const age = Date.now() - this.createdAt;
    if (age < 5000) console.log(`🔵 Young DO instance: age=${age}ms`);
    const cue = await this.state.storage.get("cue");
    const daterange = cue ? `#EXT-X-DATERANGE:ID="ad",DURATION=${cue.duration}\n` : "";
    return new Response(`#EXTM3U\n#EXT-X-VERSION:6\n${daterange}`, {
      headers: { "content-type": "application/vnd.apple.mpegurl" },
    });
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("ok");
    const colo = request.cf?.colo ?? "SJC";
    const channel = url.pathname.split("/")[2] ?? "default";
    const name = `${colo}:demo:${channel}`;
    console.log(`📍 DO routing: name=${name}, colo=${colo}`);
    const stub = env.CHANNEL_DO.get(env.CHANNEL_DO.idFromName(name));
    const response = await stub.fetch(request);
    await env.BEACON_QUEUE.send({ channel, path: url.pathname, at: Date.now() });
    return response;
  },
};
