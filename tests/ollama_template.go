// Executes an Ollama TEMPLATE the way Ollama's template package executes one that uses .Messages: Go's
// text/template with missingkey=zero, System = the system messages joined by "\n\n", consecutive messages of one
// role merged into one. Reads the template from the file named by the first argument and a JSON list of
// conversations (lists of {role, content}) from stdin; prints the rendered prompts as a JSON list.
// Used by tests/test_gguf_export.py where Go is installed (Ollama itself is not installable here).
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func main() {
	src, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(string(src)))
	var conversations [][]Message
	if err := json.NewDecoder(os.Stdin).Decode(&conversations); err != nil {
		panic(err)
	}
	var out []string
	for _, msgs := range conversations {
		system, messages := collate(msgs)
		var b strings.Builder
		if err := tmpl.Execute(&b, map[string]any{"System": system, "Messages": messages, "Response": ""}); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
