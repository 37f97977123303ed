mermaid.initialize({ startOnLoad: true, securityLevel: "strict", theme: "neutral", flowchart: { useMaxWidth: true } });
