//! `flagtail completions SHELL`: a script the shell takes, which completes flagtail's commands.

mod support;

use support::*;

#[test]
fn each_shell_gets_a_script_naming_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_cmd(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for command in ["check", "render", "replay", "dead-letters", "status"] {
            assert!(out.contains(command), "{shell}: no {command} in\n{out}");
        }
    }
    let (code, _, err) = run_cmd(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bash_completes_a_command_and_an_option() {
    let script = format!(
        r#"source <({bin} completions bash)
COMP_WORDS=(flagtail dead-l); COMP_CWORD=1; _flagtail flagtail dead-l flagtail
echo "commands: ${{COMPREPLY[*]}}"
COMP_WORDS=(flagtail replay --dry); COMP_CWORD=2; _flagtail flagtail --dry replay
echo "options: ${{COMPREPLY[*]}}""#,
        bin = bin()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("commands: dead-letters"), "{text}");
    assert!(text.contains("options: --dry-run"), "{text}");
}
