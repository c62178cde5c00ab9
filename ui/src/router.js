// Hash routes (`#/runs/<id>?status=failed`): the server serves one page, and
// links, reloads and the back button all work without server routes.
import { useEffect, useState } from "preact/hooks";

function parse() {
  const hash = window.location.hash.replace(/^#/, "") || "/runs";
  const [path, search = ""] = hash.split("?");
  return {
    path,
    parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    query: Object.fromEntries(new URLSearchParams(search)),
  };
}

export function useRoute() {
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const onChange = () => setRoute(parse());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

export function navigate(path, query) {
  const search = query
    ? new URLSearchParams(Object.entries(query).filter(([, v]) => v)).toString()
    : "";
  window.location.hash = search ? `${path}?${search}` : path;
}
