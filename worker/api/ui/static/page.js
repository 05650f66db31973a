// The results page's one script (a static file: the Content-Security-Policy allows no
// inline script). The page works without it; with it:
// - live updates: every data-poll-seconds the page asks its stamp address whether a
//   new snapshot landed, and if so fetches the page again and swaps in every
//   [data-live] section (the form, and what is typed in it, stays);
// - a 503 (the API refusing work under load) shows "busy, retrying in N s" and retries
//   after the Retry-After it sent;
// - submitting the query form shows a loading state until the new page arrives;
// - the share section creates and revokes the experiment's share link with a key
//   that may write.
"use strict";

(function () {
  const main = document.querySelector("main[data-stamp-url]");
  const status = document.getElementById("live-status");

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function retryAfter(response) {
    const seconds = parseInt(response.headers.get("Retry-After") || "", 10);
    return Number.isFinite(seconds) && seconds > 0 ? seconds : 5;
  }

  // Counts down "busy, retrying in N s", then calls again.
  function busy(seconds, again) {
    let left = seconds;
    const tick = function () {
      if (left <= 0) {
        again();
        return;
      }
      say("Busy, retrying in " + left + " s");
      left -= 1;
      window.setTimeout(tick, 1000);
    };
    tick();
  }

  async function refresh() {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (response.status === 503) {
      busy(retryAfter(response), refresh);
      return false;
    }
    if (!response.ok) {
      say("Could not refresh (" + response.status + ")");
      return false;
    }
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const section of document.querySelectorAll("[data-live]")) {
      const replacement = fresh.getElementById(section.id);
      if (replacement) {
        section.replaceWith(document.importNode(replacement, true));
      }
    }
    const stamp = fresh.querySelector("main[data-stamp]");
    if (stamp) {
      main.dataset.stamp = stamp.dataset.stamp;
    }
    say("Updated at " + new Date().toLocaleTimeString());
    return true;
  }

  async function poll() {
    const seconds = parseInt(main.dataset.pollSeconds || "30", 10);
    try {
      const response = await fetch(main.dataset.stampUrl, { credentials: "same-origin" });
      if (response.status === 503) {
        busy(retryAfter(response), poll);
        return;
      }
      if (response.ok) {
        const body = await response.json();
        if (String(body.stamp) !== main.dataset.stamp) {
          say("New results, loading…");
          await refresh();
        } else if (status && /^(Busy|Offline)/.test(status.textContent)) {
          say("Up to date at " + new Date().toLocaleTimeString());
        }
      }
    } catch (error) {
      say("Offline, retrying in " + seconds + " s");
    }
    window.setTimeout(poll, seconds * 1000);
  }

  if (main) {
    window.setTimeout(poll, parseInt(main.dataset.pollSeconds || "30", 10) * 1000);
  }

  const form = document.getElementById("query");
  if (form) {
    form.addEventListener("submit", function () {
      const button = form.querySelector("button[type=submit]");
      if (button) {
        button.disabled = true;
        button.textContent = "Loading…";
      }
      form.setAttribute("aria-busy", "true");
      say("Computing the results for these parameters…");
    });
  }

  const share = document.getElementById("share");
  if (share) {
    const output = document.getElementById("share-output");
    const key = document.getElementById("share-key");
    async function call(method) {
      output.textContent = method === "POST" ? "Creating…" : "Revoking…";
      const response = await fetch(share.dataset.api, {
        method: method,
        headers: { Authorization: "Bearer " + key.value.trim() },
      });
      const body = await response.json().catch(function () {
        return {};
      });
      if (response.status === 503) {
        output.textContent = "Busy, try again in " + retryAfter(response) + " s.";
      } else if (!response.ok) {
        output.textContent = body.error || "Failed (" + response.status + ").";
      } else if (body.share_link) {
        const token = body.share_link.split("/").pop();
        const link = document.createElement("a");
        link.href = "/ui/share/" + encodeURIComponent(token);
        link.id = "share-link";
        link.textContent = new URL(link.href, window.location.href).href;
        output.replaceChildren("Anyone with this link sees the results: ", link,
          " (until " + body.expires_at + ").");
      } else {
        output.textContent = "The share link is revoked.";
      }
    }
    document.getElementById("share-create").addEventListener("click", function () {
      call("POST");
    });
    document.getElementById("share-revoke").addEventListener("click", function () {
      call("DELETE");
    });
    share.hidden = false;
  }
})();

// The condition builders of the JSON fields (custom_filter: an AND of OR groups of
// {criteria, operator, value, key}; event_attribute: an OR of AND groups of {key,
// operand, value}). The textarea stays the form field and the source of truth: the
// builder is drawn from its JSON and writes its JSON back on every change.
(function () {
  for (const area of document.querySelectorAll("textarea[data-builder]")) {
    const spec = JSON.parse(area.dataset.builder);
    const box = document.createElement("div");
    box.className = "builder";
    area.before(box);

    function parse() {
      try {
        const groups = JSON.parse(area.value || "[]");
        return Array.isArray(groups) ? groups.map(function (g) {
          return Array.isArray(g) ? g : [g];
        }) : [];
      } catch (error) {
        return null;
      }
    }

    function write(groups) {
      const kept = groups.filter(function (g) {
        return g.length > 0;
      });
      area.value = kept.length ? JSON.stringify(kept) : "";
    }

    function control(field, value, onChange, label) {
      const options = spec.options[field];
      const input = document.createElement(options ? "select" : "input");
      if (options) {
        for (const option of options) {
          input.append(new Option(option, option, false, option === value));
        }
      } else {
        input.value = value === undefined ? "" : String(value);
        // A select shows its choice; a blank text field needs its name on view.
        input.placeholder = field;
      }
      input.setAttribute("aria-label", label + " " + field);
      input.dataset.field = field;
      input.addEventListener("change", function () {
        onChange(input.value);
      });
      return input;
    }

    function button(text, onClick) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.textContent = text;
      b.addEventListener("click", onClick);
      return b;
    }

    function draw() {
      const groups = parse();
      box.replaceChildren();
      if (groups === null) {
        box.textContent = "The JSON below is not valid; fix it by hand, or clear it.";
        return;
      }
      groups.forEach(function (group, g) {
        const fieldset = document.createElement("fieldset");
        const legend = document.createElement("legend");
        legend.textContent = (g ? spec.outer + " " : "") + "group " + (g + 1) +
          " (any " + spec.inner + " condition)";
        fieldset.append(legend);
        group.forEach(function (rule, r) {
          const row = document.createElement("div");
          row.className = "builder-row";
          const where = "group " + (g + 1) + " condition " + (r + 1);
          for (const field of spec.fields) {
            row.append(control(field, rule[field], function (value) {
              rule[field] = value;
              write(groups);
            }, where));
          }
          row.append(button("Remove", function () {
            group.splice(r, 1);
            write(groups);
            draw();
          }));
          fieldset.append(row);
        });
        fieldset.append(button("Add " + spec.inner + " condition", function () {
          group.push(spec.blank());
          write(groups);
          draw();
        }));
        box.append(fieldset);
      });
      box.append(button("Add " + spec.outer + " group", function () {
        groups.push([spec.blank()]);
        write(groups);
        draw();
      }));
    }

    spec.blank = function () {
      const rule = {};
      for (const field of spec.fields) {
        rule[field] = spec.options[field] ? spec.options[field][0] : "";
      }
      return rule;
    };
    area.addEventListener("change", draw);
    draw();
  }
})();
