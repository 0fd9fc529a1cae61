// cf-ssai-decision: answers POST /decision with an ad pod.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("ok");
    if (request.method === "POST" && url.pathname === "/decision") {
      const { channel, durationSec } = await request.json();
      const cached = await env.CONFIG_KV.get(`channel:${channel}`, { cacheTtl: 60 });
      return Response.json({ pod: { podId: `pod_${Date.now()}`, durationSec, items: [] }, config: !!cached });
    }
    return new Response("not found", { status: 404 });
  },
};
