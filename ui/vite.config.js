import { defineConfig } from "vite";

// JSX compiles to Preact's automatic runtime; assets are emitted under
// /ui/ so the host can embed the build and serve it at that prefix. The
// dev server (`npx vite`) proxies the API to a running `weft serve`
// (WEFT_API, default http://127.0.0.1:8080).
const api = process.env.WEFT_API || "http://127.0.0.1:8080";

export default defineConfig({
  base: "/ui/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  server: { proxy: { "/v1": api } },
});
