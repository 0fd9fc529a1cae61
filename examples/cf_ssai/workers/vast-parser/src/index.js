// cf-ssai-vast-parser: POST /parse {vastXML, durationSec} -> the ads it describes.
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("ok");
    if (request.method === "POST" && url.pathname === "/parse") {
      const { vastXML, durationSec } = await request.json();
      const version = /<VAST version="([^"]+)"/.exec(vastXML ?? "")?.[1] ?? null;
      return Response.json({ vastVersion: version, ads: [], durationSec });
    }
    return new Response("not found", { status: 404 });
  },
};
